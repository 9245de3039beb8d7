"""DAVIS region similarity J and boundary accuracy F, computed exactly as the official toolkit does.

Reference: ``davisvideochallenge/davis2017-evaluation`` (``davis2017/metrics.py`` and ``davis2017/utils.py``),
commit ``ac7c43f``. The functions here give the same numbers as ``db_eval_iou``, ``db_eval_boundary`` /
``f_measure``, ``_seg2bmap`` and ``db_statistics``:

* J = |P ∩ G| / |P ∪ G| outside void pixels, and 1 when the union is empty.
* F: 1-px boundaries by :func:`seg2bmap` (the image border is never a boundary), each dilated with ``cv2.dilate``
  and :func:`disk` of radius ``bound_pix = ceil(bound_th * ||(H, W)||)`` (``bound_th`` itself when >= 1);
  precision / recall are the fractions of boundary pixels within the other mask's dilated boundary, with the
  official special cases (a side without boundary pixels gets precision or recall 1, the other side 0).

The only difference is speed: boundaries and dilations are computed on a crop around the two masks (with a
margin wider than the structuring element), which gives identical pixel counts, hence identical floats.

:func:`db_statistics` differs from the official one in one way: the official casts the decay bin edges to
``uint8``, so for more than 256 frames they wrap and the decay becomes NaN or wrong. We keep them as integers.
DAVIS sequences are far shorter, so DAVIS numbers are unaffected.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "BOUND_TH",
    "Statistics",
    "bound_pixels",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
    "disk",
    "f_measure",
    "frame_scores",
    "seg2bmap",
]

logger = logging.getLogger(__name__)

BOUND_TH = 0.008
"""Official boundary tolerance: a fraction of the image diagonal (or pixels when >= 1)."""


class Statistics(NamedTuple):
    """Per-object summary of per-frame values (official ``db_statistics``)."""

    mean: float
    recall: float
    decay: float


def disk(radius: float) -> np.ndarray:
    """Disk structuring element, identical to ``skimage.morphology.disk(radius)``.

    Returns:
        (n, n) uint8 in {0, 1}, ``x² + y² <= radius²`` on the grid ``arange(-radius, radius + 1)``
        (n = 2·radius + 1 for integer radii). Read-only (cached).
    """
    return _disk(float(radius))


@functools.lru_cache(maxsize=16)
def _disk(radius: float) -> np.ndarray:
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    kernel = (x**2 + y**2 <= radius**2).astype(np.uint8)
    kernel.flags.writeable = False
    return kernel


def bound_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> float:
    """Dilation radius of the official F: ``bound_th`` if >= 1, else ``ceil(bound_th * ||shape||)``.

    Args:
        shape: (H, W) of the frame.
    """
    return float(bound_th) if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(shape)))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """1-px boundary map of a binary mask (official ``_seg2bmap`` at full resolution).

    A pixel is a boundary pixel if it differs from its right, lower or lower-right neighbour; on the last row only
    the right neighbour counts, on the last column only the lower one, and the bottom-right pixel never is one.
    So the image border itself is never a boundary.

    Args:
        seg: (..., H, W) mask, any dtype (non-zero = foreground); leading axes are independent masks.

    Returns:
        (..., H, W) bool boundary map.
    """
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> float | np.ndarray:
    """Region similarity J (official ``db_eval_iou``).

    Args:
        annotation: (H, W) or (T, H, W) ground-truth mask, any dtype (non-zero = object).
        segmentation: same shape, predicted mask.
        void_pixels: optional same-shape mask of pixels to ignore.

    Returns:
        float for 2-D input, else (T,) float64; 1 where prediction and ground truth are both empty.
    """
    annotation = np.asarray(annotation)
    segmentation = np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation shape {annotation.shape} != segmentation shape {segmentation.shape}")
    gt = annotation.astype(bool)
    pred = segmentation.astype(bool)
    inters = pred & gt
    union = pred | gt
    if void_pixels is not None:
        valid = ~np.asarray(void_pixels).astype(bool)
        inters &= valid
        union &= valid
    n_inters = np.count_nonzero(inters, axis=(-2, -1))
    n_union = np.count_nonzero(union, axis=(-2, -1))
    j = np.where(n_union == 0, 1.0, n_inters / np.maximum(n_union, 1))
    return float(j) if j.ndim == 0 else j


def f_measure(
    foreground_mask: np.ndarray,
    gt_mask: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Boundary F of one frame (official ``f_measure``; note the prediction comes first).

    Args:
        foreground_mask: (H, W) predicted mask, any dtype (non-zero = object).
        gt_mask: (H, W) ground-truth mask.
        void_pixels: optional (H, W) mask; void pixels are set to background in both masks before boundaries.
        bound_th: boundary tolerance, fraction of the diagonal (< 1) or pixels (>= 1).
    """
    fg = np.asarray(foreground_mask).astype(bool)
    gt = np.asarray(gt_mask).astype(bool)
    if fg.ndim != 2 or fg.shape != gt.shape:
        raise ValueError(f"expected two (H, W) masks of the same shape, got {fg.shape} and {gt.shape}")
    if void_pixels is not None:
        valid = ~np.asarray(void_pixels).astype(bool)
        fg = fg & valid
        gt = gt & valid
    return _boundary_f(fg, gt, disk(bound_pixels(fg.shape, bound_th)))


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float | np.ndarray:
    """Boundary F (official ``db_eval_boundary``).

    Args:
        annotation: (H, W) or (T, H, W) ground-truth mask, any dtype (non-zero = object).
        segmentation: same shape, predicted mask.
        void_pixels: optional same-shape mask of pixels to ignore.
        bound_th: boundary tolerance, fraction of the diagonal (< 1) or pixels (>= 1).

    Returns:
        float for 2-D input, else (T,) float64.
    """
    annotation = np.asarray(annotation)
    segmentation = np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation shape {annotation.shape} != segmentation shape {segmentation.shape}")
    if void_pixels is not None and np.shape(void_pixels) != annotation.shape:
        raise ValueError(f"void_pixels shape {np.shape(void_pixels)} != annotation shape {annotation.shape}")
    if annotation.ndim == 2:
        return f_measure(segmentation, annotation, void_pixels, bound_th)
    if annotation.ndim != 3:
        raise ValueError(f"expected (H, W) or (T, H, W) masks, got shape {annotation.shape}")
    return np.array(
        [
            f_measure(segmentation[t], annotation[t], None if void_pixels is None else void_pixels[t], bound_th)
            for t in range(annotation.shape[0])
        ],
        dtype=np.float64,
    )


def frame_scores(
    gt: np.ndarray, pred: np.ndarray, num_objects: int, *, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects 1..K on one frame of label maps (semi-supervised DAVIS, no void).

    Each object k is scored on the binary masks ``gt == k`` and ``pred == k``; labels outside 1..K are background
    for every object. Equal to ``db_eval_iou`` / ``db_eval_boundary`` applied per object.

    Args:
        gt: (H, W) integer ground-truth labels (void 255 already mapped to 0 by the caller).
        pred: (H, W) integer predicted labels.
        num_objects: K.
        bound_th: boundary tolerance, fraction of the diagonal (< 1) or pixels (>= 1).

    Returns:
        j, f: (K,) float64 each.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(f"expected two (H, W) label maps of the same shape, got {gt.shape} and {pred.shape}")
    kernel = disk(bound_pixels(gt.shape, bound_th))
    j = np.ones(num_objects, dtype=np.float64)
    f = np.ones(num_objects, dtype=np.float64)
    for i in range(num_objects):
        g = gt == i + 1
        p = pred == i + 1
        n_union = np.count_nonzero(g | p)
        if n_union == 0:
            continue  # both empty: J = 1 and no boundary on either side: F = 1
        j[i] = np.count_nonzero(g & p) / n_union
        f[i] = _boundary_f(p, g, kernel)
    return j, f


def _crop_box(a: np.ndarray, b: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Bounding box of ``a | b`` grown by ``margin`` and clipped to the image; None if both are empty."""
    rows = np.flatnonzero(a.any(axis=1) | b.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(a.any(axis=0) | b.any(axis=0))
    h, w = a.shape
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, h)),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, w)),
    )


def _boundary_f(fg: np.ndarray, gt: np.ndarray, kernel: np.ndarray) -> float:
    """Official F of two (H, W) bool masks, computed on a crop around them.

    Why a crop is exact: boundary pixels lie within one pixel of the masks' bounding box, a dilation reaches at most
    ``kernel`` size away, and the crop edge is either the image edge (same border rule) or an all-background row /
    column (no boundary under either rule). ``cv2.dilate``'s default border never adds foreground.
    """
    box = _crop_box(fg, gt, max(kernel.shape) + 1)
    if box is None:
        return 1.0
    fg_b = seg2bmap(fg[box])
    gt_b = seg2bmap(gt[box])
    n_fg = np.count_nonzero(fg_b)
    n_gt = np.count_nonzero(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        fg_dil = cv2.dilate(fg_b.view(np.uint8), kernel).view(bool)
        gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
        precision = np.count_nonzero(fg_b & gt_dil) / float(n_fg)
        recall = np.count_nonzero(gt_b & fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(per_frame_values: np.ndarray) -> Statistics:
    """Mean, recall and decay of per-frame values (official ``db_statistics``).

    mean = nanmean; recall = fraction of frames with value > 0.5 (strict; NaN counts as a miss);
    decay = nanmean(first bin) - nanmean(last bin) over 4 bins with edges
    ``ids = round(linspace(1, n, 5) + 1e-10) - 1`` and bins ``v[ids[i] : ids[i + 1] + 1]``.

    Args:
        per_frame_values: (T,) float values of the counted frames.
    """
    v = np.asarray(per_frame_values, dtype=np.float64)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        decay = np.nanmean(v[ids[0] : ids[1] + 1]) - np.nanmean(v[ids[3] : ids[4] + 1])
    return Statistics(float(mean), float(recall), float(decay))
