"""Prompt geometry shared by training and inference: the crop window, its warp, and the prompt maps.

A prompt is a box ``(x0, y0, x1, y1)`` in pixel coordinates (x1/y1 exclusive edges, as in
``mask.nonzero()`` max + 1) and/or clicks ``(x, y, positive)``. The model sees a square crop of ``size`` pixels
around the region of interest (the box expanded by ``context`` of its size on each side), so objects of every size
reach it at the same scale; the crop may reach outside the frame (padded with the ImageNet mean colour).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

__all__ = ["Box", "Point", "Window", "prompt_window", "warp_image", "warp_mask", "unwarp_probs", "render_prompts",
           "mask_box", "CROP_SIZE", "CONTEXT", "CLICK_RADIUS"]

Box = tuple[float, float, float, float]
Point = tuple[float, float, bool]
CROP_SIZE = 320
CONTEXT = 0.25  # crop = box grown by this fraction of its width/height on each side
MIN_SIDE = 24.0  # pixels; tiny boxes still get some context
CLICK_RADIUS = 5  # pixels of the crop (RITM's disk radius)
_MEAN_RGB = (124, 116, 104)  # ImageNet mean, uint8


class Window(NamedTuple):
    """A crop window in frame pixel coordinates (may extend past the frame)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def affine(self, size: int) -> np.ndarray:
        """2x3 matrix mapping frame pixel centres to crop pixel centres."""
        sx, sy = size / (self.x1 - self.x0), size / (self.y1 - self.y0)
        return np.array([[sx, 0, (0.5 - self.x0) * sx - 0.5], [0, sy, (0.5 - self.y0) * sy - 0.5]], np.float64)

    def to_crop(self, x: float, y: float, size: int) -> tuple[float, float]:
        """Frame pixel coordinates (continuous, pixel corners at integers) to crop coordinates."""
        return ((x - self.x0) * size / (self.x1 - self.x0), (y - self.y0) * size / (self.y1 - self.y0))


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box of a binary mask (x1/y1 exclusive), ``None`` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def prompt_window(height: int, width: int, box: Box | None = None, points: Sequence[Point] = (),
                  prev_mask: np.ndarray | None = None, context: float = CONTEXT) -> Window:
    """The crop window for a prompt.

    With a box: the box grown by ``context``. Without one: the bounding box of the previous mask and the positive
    clicks, grown the same way (RITM's zoom-in), or the whole frame when there is no previous mask.
    """
    region = box
    if region is None and prev_mask is not None and prev_mask.any():
        mb = mask_box(prev_mask)
        assert mb is not None
        pos = [p for p in points if p[2]]
        xs = [mb[0], mb[2]] + [p[0] for p in pos] + [p[0] + 1 for p in pos]  # a click covers its pixel
        ys = [mb[1], mb[3]] + [p[1] for p in pos] + [p[1] + 1 for p in pos]
        region = (min(xs), min(ys), max(xs), max(ys))
    if region is None:
        return Window(0.0, 0.0, float(width), float(height))
    x0, y0, x1, y1 = (float(v) for v in region)
    w, h = max(x1 - x0, MIN_SIDE), max(y1 - y0, MIN_SIDE)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = w * (1 + 2 * context), h * (1 + 2 * context)
    return Window(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def warp_image(image: np.ndarray, window: Window, size: int = CROP_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame -> (size, size, 3) uint8 crop of ``window``."""
    return cv2.warpAffine(image, window.affine(size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=_MEAN_RGB)


def warp_mask(mask: np.ndarray, window: Window, size: int = CROP_SIZE) -> np.ndarray:
    """(H, W) mask (bool or float in [0, 1]) -> (size, size) float32 crop, zero outside the frame."""
    return cv2.warpAffine(mask.astype(np.float32), window.affine(size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def unwarp_probs(probs: np.ndarray, window: Window, height: int, width: int) -> np.ndarray:
    """(size, size) crop probabilities -> (height, width) frame probabilities (zero outside the window)."""
    size = probs.shape[0]
    inv = cv2.invertAffineTransform(window.affine(size))
    return cv2.warpAffine(probs.astype(np.float32), inv, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def render_prompts(window: Window, size: int, box: Box | None, points: Sequence[Point],
                   prev_crop: np.ndarray | None = None) -> np.ndarray:
    """The model's prompt channels in crop space, (4, size, size) float32: box, positive clicks, negative clicks,
    previous mask."""
    maps = np.zeros((4, size, size), np.float32)
    if box is not None:
        x0, y0 = window.to_crop(box[0], box[1], size)
        x1, y1 = window.to_crop(box[2], box[3], size)
        c0, r0 = max(int(round(x0)), 0), max(int(round(y0)), 0)
        c1, r1 = min(int(round(x1)), size), min(int(round(y1)), size)
        maps[0, r0:r1, c0:c1] = 1.0
    for x, y, positive in points:
        cx, cy = window.to_crop(x + 0.5, y + 0.5, size)  # (x, y): the clicked pixel's column and row
        cv2.circle(maps[1 if positive else 2], (int(round(cx - 0.5)), int(round(cy - 0.5))), CLICK_RADIUS, 1.0, -1)
    if prev_crop is not None:
        maps[3] = prev_crop
    return maps
