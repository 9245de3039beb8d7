"""Click simulation (RITM / f-BRS protocol): the next click goes to the interior point of the largest error
region, positive where the object was missed, negative where background was taken."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rdevos.prompt.encoding import Point

__all__ = ["next_click", "first_click", "iou"]


def _interior(region: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Largest distance to the region's border (the frame edge counts as border) and where it is."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    idx = int(np.argmax(dist))
    return float(dist.flat[idx]), divmod(idx, region.shape[1])


def first_click(gt: np.ndarray) -> Point | None:
    """A positive click at the object's most interior point."""
    if not gt.any():
        return None
    _, (r, c) = _interior(gt.astype(bool))
    return float(c), float(r), True


def next_click(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> Point | None:
    """The corrective click for binary ``pred`` against ``gt`` (both (H, W) bool); ``None`` when they agree.

    ``ignore`` marks pixels that are not scored (e.g. outside the frame)."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    fn, fp = gt & ~pred, pred & ~gt
    if ignore is not None:
        fn, fp = fn & ~ignore, fp & ~ignore
    d_fn, at_fn = _interior(fn) if fn.any() else (0.0, (0, 0))
    d_fp, at_fp = _interior(fp) if fp.any() else (0.0, (0, 0))
    if d_fn == 0 and d_fp == 0:
        return None
    positive = d_fn >= d_fp
    r, c = at_fn if positive else at_fp
    return float(c), float(r), bool(positive)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty)."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)
