"""Clip augmentations with numpy/cv2: random resized crops and affine warps composed into one ``cv2.warpAffine`` per
frame (each frame is resampled once), colour jitter with torchvision's parameters, first-frame mask perturbation,
thin-plate-spline warps and motion blur.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import cv2
import numpy as np

__all__ = ["perturb_mask", "motion_blur", "FILL_MEAN"]

#: Fill colour of pixels outside the warped image (the reference's ``im_mean``).
FILL_MEAN = (124, 116, 104)


def _rrc_params(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float],
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: (top, left, height, width)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _affine(angle: float = 0.0, scale: float = 1.0, shear: float = 0.0, center: tuple[float, float] = (0.0, 0.0),
            translate: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """3x3 forward matrix: rotate (deg, counter-clockwise in image view), x-shear (deg) and scale about ``center``."""
    a, s = math.radians(angle), math.radians(shear)
    cx, cy = center
    rot = np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1]])
    sh = np.array([[1, math.tan(s), 0], [0, 1, 0], [0, 0, 1]])
    m = np.diag([scale, scale, 1.0]) @ rot @ sh
    t1 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    t2 = np.array([[1, 0, cx + translate[0]], [0, 1, cy + translate[1]], [0, 0, 1]])
    return t2 @ m @ t1


def _warp(img: np.ndarray, m: np.ndarray, size: int, interp: int, fill: Any) -> np.ndarray:
    return cv2.warpAffine(img, m[:2].astype(np.float64), (size, size), flags=interp,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


class _Jitter(NamedTuple):
    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def _jitter_params(rng: np.random.Generator, b: float, c: float, s: float, h: float) -> _Jitter:
    """torchvision ``ColorJitter`` parameters: factors in [1-x, 1+x] (hue in [-h, h]) applied in random order."""
    return _Jitter(tuple(int(i) for i in rng.permutation(4)), rng.uniform(max(0, 1 - b), 1 + b),
                   rng.uniform(max(0, 1 - c), 1 + c), rng.uniform(max(0, 1 - s), 1 + s), rng.uniform(-h, h))


def _grey(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _apply_jitter(img: np.ndarray, j: _Jitter) -> np.ndarray:
    """Apply colour jitter to an (H, W, 3) float32 image in [0, 255] (clipped after every op, as torchvision)."""
    for op in j.order:
        if op == 0 and j.brightness != 1:
            img = np.clip(img * j.brightness, 0, 255)
        elif op == 1 and j.contrast != 1:
            mean = float(_grey(img).mean())
            img = np.clip(mean + (img - mean) * j.contrast, 0, 255)
        elif op == 2 and j.saturation != 1:
            g = _grey(img)[..., None]
            img = np.clip(g + (img - g) * j.saturation, 0, 255)
        elif op == 3 and j.hue != 0:
            hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees
            hsv[..., 0] = (hsv[..., 0] + j.hue * 360.0) % 360.0
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    return img.astype(np.float32, copy=False)


def _to_grey3(img: np.ndarray) -> np.ndarray:
    return np.repeat(_grey(img)[..., None], 3, axis=2).astype(np.float32)


_KERNEL_SHAPES = 4


def _perturb_kernel(rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(3, 10))
    shape = int(rng.integers(_KERNEL_SHAPES))
    if shape == 0:
        return cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    if shape == 1:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    if shape == 2:  # half-height ellipse
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, max(k // 2, 1)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(k // 2, 1), k))  # half-width


def perturb_mask(mask: np.ndarray, target_iou: float, rng: np.random.Generator, *, max_rounds: int = 250
                 ) -> np.ndarray:
    """Corrupt a binary mask with random local dilations/erosions until its IoU with the input drops below target.

    Up to ``max_rounds`` rounds of 4 random boxes each (placed around the object); each box region is dilated or
    eroded (50/50) with a random 3..9 kernel (rectangle, ellipse, half-height or half-width ellipse); with p=0.1
    one pixel at the box centre is set to 0 or 1. Stops as soon as IoU < ``target_iou`` (checked after every box,
    so the result lands just below the target).

    Args:
        mask: (H, W) array, non-zero (or >= 0.5 for floats) = object.
        target_iou: stop below this IoU, e.g. drawn from U[0.85, 1].
    Returns:
        (H, W) uint8 {0, 1}. An empty mask is returned unchanged.
    """
    gt = (mask >= 0.5) if np.issubdtype(mask.dtype, np.floating) else (mask > 0)
    if not gt.any():
        return gt.astype(np.uint8)
    h, w = gt.shape
    out = gt.astype(np.uint8) * 255
    ys, xs = np.nonzero(gt)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    bh, bw = y1 - y0, x1 - x0
    n_gt = int(gt.sum())
    for _ in range(max_rounds):
        for _ in range(4):
            sh = int(rng.integers(max(bh // 8, 3), max(bh // 2, 4) + 1))
            sw = int(rng.integers(max(bw // 8, 3), max(bw // 2, 4) + 1))
            cy = int(rng.integers(max(y0 - bh // 10, 0), min(y1 + bh // 10, h)))
            cx = int(rng.integers(max(x0 - bw // 10, 0), min(x1 + bw // 10, w)))
            ty, tx = max(cy - sh // 2, 0), max(cx - sw // 2, 0)
            by, bx = min(ty + sh, h), min(tx + sw, w)
            region = out[ty:by, tx:bx]
            kernel = _perturb_kernel(rng)
            op = cv2.dilate if rng.random() < 0.5 else cv2.erode
            out[ty:by, tx:bx] = op(region, kernel)
            if rng.random() < 0.1:
                out[cy, cx] = 0 if rng.random() < 0.5 else 255
            cur = out > 0
            inter = np.count_nonzero(cur & gt)
            union = n_gt + np.count_nonzero(cur) - inter
            if inter / max(union, 1) < target_iou:
                return cur.astype(np.uint8)
    return (out > 0).astype(np.uint8)


def _tps_map(rng: np.random.Generator, size: int, points: int = 12, sigma: float = 0.02,
             grid: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Thin-plate-spline backward map (map_x, map_y) for ``cv2.remap``: ``points`` random control points moved by
    N(0, sigma) (in units of the image size); solved on a coarse grid and upsampled bilinearly."""
    src = rng.uniform(0, 1, size=(points, 2))
    dst = src + rng.normal(0, sigma, size=(points, 2))

    def u(r2: np.ndarray) -> np.ndarray:
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-12)) * 0.5, 0.0)  # r^2 log r

    # Fit dst -> src (backward mapping: for an output pixel at dst, where to sample in the input).
    d2 = ((dst[:, None] - dst[None]) ** 2).sum(-1)
    p = np.hstack([np.ones((points, 1)), dst])
    a = np.zeros((points + 3, points + 3))
    a[:points, :points] = u(d2)
    a[:points, points:] = p
    a[points:, :points] = p.T
    rhs = np.zeros((points + 3, 2))
    rhs[:points] = src
    coef = np.linalg.solve(a + np.eye(points + 3) * 1e-8, rhs)
    g = np.linspace(0, 1, grid)
    gx, gy = np.meshgrid(g, g)
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    k = u(((q[:, None] - dst[None]) ** 2).sum(-1))
    mapped = k @ coef[:points] + np.hstack([np.ones((len(q), 1)), q]) @ coef[points:]
    mx = cv2.resize(mapped[:, 0].reshape(grid, grid).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    my = cv2.resize(mapped[:, 1].reshape(grid, grid).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return mx * (size - 1), my * (size - 1)


def motion_blur(img: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Linear motion blur of an (H, W, C) float image: the mean along a ``length``-pixel line at ``angle`` degrees
    (a camera or object moving during the exposure)."""
    length = max(int(length), 1)
    if length < 2:
        return img
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle)) * c, math.sin(math.radians(angle)) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    k /= k.sum()
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
