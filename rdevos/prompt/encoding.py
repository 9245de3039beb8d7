"""Prompt geometry shared by training and inference: the crop window, its warp, and the prompt maps.

A prompt is a box ``(x0, y0, x1, y1)`` in pixel coordinates (x1/y1 exclusive edges, as in
``mask.nonzero()`` max + 1) and/or clicks ``(x, y, positive)``. The model sees a square crop of ``size`` pixels
around the region of interest (the box expanded by ``context`` of its size on each side), so objects of every size
reach it at the same scale; the crop may reach outside the frame (padded with the ImageNet mean colour).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

if __name__.startswith("rdevos."):
    from rdevos.errors import InputError
else:  # shipped beside a prompt-model export as rdevos_prompt_encoding.py: the rdevos package may be absent
    from rdevos_bookkeeping import InputError  # type: ignore[no-redef]  # noqa: I001

__all__ = ["Box", "Point", "Window", "PreparedPrompt", "prompt_window", "warp_image", "warp_mask", "unwarp_probs",
           "render_prompts", "mask_box", "check_prompt", "keep_clicked_parts", "prepare_prompt", "finish_prompt",
           "CROP_SIZE", "CONTEXT", "CLICK_RADIUS", "IMAGE_MEAN", "IMAGE_STD", "SHIPPED_NAME"]

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
Point = tuple[float, float, bool]
CROP_SIZE = 320
CONTEXT = 0.25  # crop = box grown by this fraction of its width/height on each side
MIN_SIDE = 24.0  # pixels; tiny boxes still get some context
CLICK_RADIUS = 5  # pixels of the crop (RITM's disk radius)
_MEAN_RGB = (124, 116, 104)  # ImageNet mean, uint8
#: The crop's normalisation: (RGB uint8 - IMAGE_MEAN) / IMAGE_STD, per channel.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
#: The file name of this module inside a prompt-model export folder (it imports only numpy and OpenCV).
SHIPPED_NAME = "rdevos_prompt_encoding.py"


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


def check_prompt(height: int, width: int, box: Box | Sequence[float] | None,
                 points: Sequence[Sequence[float | bool]], has_prev: bool = False) -> tuple[Box | None, list[Point]]:
    """Validate a box and clicks against a frame size; returns them normalised (floats, ``bool`` polarity).

    Without a box there must be a positive click, or a previous mask (``has_prev``) that negative clicks refine.
    Raises :class:`InputError` naming the problem (no prompt, malformed or empty box, coordinates off the frame).
    """
    b: Box | None = None
    if box is not None:
        if len(box) != 4:
            raise InputError(f"a box is 4 numbers x0,y0,x1,y1; got {list(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise InputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty: need x0 < x1 and y0 < y1")
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise InputError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}x{height} (WxH) frame")
        b = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        if b != (x0, y0, x1, y1):
            logger.warning("box %g,%g,%g,%g reaches past the %dx%d (WxH) frame; clipped to %g,%g,%g,%g",
                           x0, y0, x1, y1, width, height, *b)
    pts: list[Point] = []
    for p in points:
        if len(p) not in (2, 3):
            raise InputError(f"a click is x,y or x,y,positive; got {list(p)}")
        x, y = float(p[0]), float(p[1])
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(f"click {x:g},{y:g} lies outside the {width}x{height} (WxH) frame")
        pts.append((x, y, bool(p[2]) if len(p) == 3 else True))
    if b is None and not any(p[2] for p in pts) and not (has_prev and pts):
        raise InputError("a prompt needs a box or at least one positive click (or a previous mask to refine)")
    return b, pts


class PreparedPrompt(NamedTuple):
    """What the network sees for one prompt, and what maps its output back to the frame."""

    window: Window
    crop: np.ndarray  #: (3, size, size) float32 (a channels-first view), normalised with IMAGE_MEAN / IMAGE_STD
    maps: np.ndarray  #: (4, size, size) float32 prompt channels (:func:`render_prompts`)
    box: Box | None  #: the checked box (clipped to the frame)
    points: list[Point]  #: the checked clicks
    height: int
    width: int


def prepare_prompt(image: np.ndarray, box: Box | Sequence[float] | None, points: Sequence[Sequence[float | bool]],
                   prev_mask: np.ndarray | None, size: int, context: float = CONTEXT) -> PreparedPrompt:
    """Check a prompt on an (H, W, 3) uint8 RGB frame and build the network's crop and prompt maps.

    Raises :class:`InputError` for a frame that is not uint8 RGB, a bad prompt (:func:`check_prompt`) or a
    ``prev_mask`` of another size.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"the frame must be an (H, W, 3) uint8 RGB array, not {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    b, pts = check_prompt(h, w, box, points, has_prev=prev_mask is not None)
    if prev_mask is not None and np.asarray(prev_mask).shape != (h, w):
        raise InputError(f"prev_mask has shape {np.asarray(prev_mask).shape}, the frame is {h}x{w}")
    window = prompt_window(h, w, b, pts, prev_mask, context)
    crop = (warp_image(image, window, size).astype(np.float32) - IMAGE_MEAN) / IMAGE_STD
    prev = None if prev_mask is None else warp_mask(np.asarray(prev_mask) > 0.5, window, size)
    maps = render_prompts(window, size, b, pts, prev)
    return PreparedPrompt(window, crop.transpose(2, 0, 1), maps, b, pts, h, w)


def finish_prompt(crop_probs: np.ndarray, prep: PreparedPrompt, keep_clicked: bool = True) -> np.ndarray:
    """(size, size) crop probabilities -> (H, W) float32 frame probabilities; for prompts without a box and
    ``keep_clicked``, only the connected parts that hold a positive click are kept (:func:`keep_clicked_parts`)."""
    probs = unwarp_probs(crop_probs, prep.window, prep.height, prep.width)
    if keep_clicked and prep.box is None:
        probs = keep_clicked_parts(probs, prep.points)
    return probs


def keep_clicked_parts(probs: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """Zero the connected parts of ``probs > 0.5`` that hold no positive click (unchanged if none holds one)."""
    n, comp = cv2.connectedComponents((probs > 0.5).astype(np.uint8), connectivity=8)
    h, w = probs.shape
    keep = {int(comp[min(int(y), h - 1), min(int(x), w - 1)]) for x, y, pos in points if pos} - {0}
    if n <= 2 or not keep:
        return probs
    return np.where(np.isin(comp, list(keep)) | (probs <= 0.5), probs, 0.0).astype(np.float32)
