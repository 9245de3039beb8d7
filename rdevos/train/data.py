"""Training data: video clips (DAVIS / YouTube-VOS layout), static-image and coco pseudo-videos, synthetic videos,
and the deterministic sampler that mixes them.

Every dataset returns the same sample dict (``T`` frames, ``O`` = max objects, ``S`` = crop size):

* ``rgb``: (T, 3, S, S) float32, ImageNet-normalised;
* ``gt``: (T, O, S, S) float32 object masks in [0, 1] (soft for static pseudo-videos, as the reference);
* ``cls_gt``: (T, S, S) int64 labels 0..O;
* ``pgt``: (O, S, S) float32 perturbed first-frame masks (IoU target ~ U[perturb_iou], rdevos-spec 6.5);
* ``selector``: (O,) float32, 1 where the object exists;
* ``info``: ``{"name": str, "frames": (T,) int64}``.

All randomness of a sample comes from the :class:`SampleSpec` the sampler passes in (index, seed, max_skip), so a
sample is a pure function of its spec: loader workers, resume and distributed sharding are deterministic.
Reading from disk is in :mod:`rdevos.train.readers`, the augmentations in :mod:`rdevos.train.augment` (numpy/cv2:
one ``cv2.warpAffine`` per frame composes the random resized crop, flip and per-frame affine, so each frame is
resampled once; torchvision's transforms would resample once per transform).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from PIL import Image

from rdevos.errors import InputError
from rdevos.train.augment import (FILL_MEAN, _affine, _apply_jitter, _jitter_params, _rrc_params, _to_grey3,
                                  _tps_map, _warp, motion_blur, perturb_mask)
from rdevos.train.readers import (IMG_EXT, ScanReport, _read_rgb, _scan_static, _scan_video_root, _Sequence, _shrink,
                                  load_label_mask, read_sequence, read_yolo_seg)

logger = logging.getLogger(__name__)

__all__ = ["SampleSpec", "VOSClipDataset", "StaticPseudoVideoDataset", "CocoPseudoVideoDataset",
           "SyntheticVideoDataset", "MixedDataset", "ClipSampler", "ScanReport", "perturb_mask", "motion_blur",
           "read_yolo_seg", "sample_frame_indices", "load_label_mask", "read_sequence", "IMAGENET_MEAN",
           "IMAGENET_STD", "FILL_MEAN"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_MAX_TRIALS = 5  # the reference retries a clip this many times when frame 0 shows no object


class SampleSpec(NamedTuple):
    """What the sampler asks a dataset for: item ``index``, drawn with ``seed``, at curriculum ``max_skip``."""

    index: int
    seed: int
    max_skip: int = 5


def _as_spec(item: int | SampleSpec | Sequence[int], default_skip: int) -> SampleSpec:
    if isinstance(item, SampleSpec):
        return item
    if isinstance(item, (int, np.integer)):
        return SampleSpec(int(item), int(item), default_skip)
    return SampleSpec(*(int(v) for v in item))


# ------------------------------------------------------------------------------------------------ frame sampling
def sample_frame_indices(rng: np.random.Generator, length: int, num_frames: int, max_skip: int) -> list[int]:
    """Pick ``num_frames`` distinct frames of a ``length``-frame video, each new one within ``max_skip`` of an
    already chosen one (STCN/RDE sampling), returned in increasing order."""
    if length < num_frames:
        raise ValueError(f"cannot sample {num_frames} frames from {length}")
    max_skip = max(int(max_skip), 1)
    chosen = [int(rng.integers(length))]
    acceptable = set(range(max(0, chosen[-1] - max_skip), min(length, chosen[-1] + max_skip + 1))) - set(chosen)
    while len(chosen) < num_frames:
        if not acceptable:  # every frame in reach is taken: widen the reach (only for very short videos)
            acceptable = set(range(length)) - set(chosen)
        nxt = int(rng.choice(sorted(acceptable)))
        chosen.append(nxt)
        acceptable |= set(range(max(0, nxt - max_skip), min(length, nxt + max_skip + 1)))
        acceptable -= set(chosen)
    return sorted(chosen)


# ------------------------------------------------------------------------------------------------ sample assembly
@dataclass
class _ClipOptions:
    num_frames: int = 5
    crop_size: int = 384
    max_objects: int = 2
    perturb_iou: tuple[float, float] = (0.85, 1.0)
    motion_blur_prob: float = 0.0
    motion_blur_max: int = 15


def _normalise(frames: np.ndarray) -> torch.Tensor:
    """(T, S, S, 3) float/uint8 in [0, 255] -> (T, 3, S, S) float32 ImageNet-normalised."""
    x = frames.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _assemble(frames: np.ndarray, obj_masks: np.ndarray, rng: np.random.Generator, opts: _ClipOptions,
              name: str, frame_ids: Sequence[int]) -> dict[str, Any]:
    """Build the sample dict from frames (T, S, S, 3) and chosen object masks (T, n<=O, S, S) in [0, 1]."""
    t, s = frames.shape[0], opts.crop_size
    o = opts.max_objects
    n = obj_masks.shape[1]
    if opts.motion_blur_prob > 0:
        frames = np.stack([motion_blur(f, int(rng.integers(3, opts.motion_blur_max + 1)), rng.uniform(0, 180))
                           if rng.random() < opts.motion_blur_prob else f for f in frames])
    gt = np.zeros((t, o, s, s), dtype=np.float32)
    gt[:, :n] = obj_masks
    cls_gt = np.zeros((t, s, s), dtype=np.int64)
    for k in range(n):
        cls_gt[obj_masks[:, k] > 0.5] = k + 1
    pgt = np.zeros((o, s, s), dtype=np.float32)
    lo, hi = opts.perturb_iou
    for k in range(n):
        if (obj_masks[0, k] > 0.5).any():
            pgt[k] = perturb_mask(obj_masks[0, k], float(rng.uniform(lo, hi)), rng)
    selector = np.zeros(o, dtype=np.float32)
    selector[0] = 1.0  # the reference keeps selector [1, .] even if no object could be found
    selector[:n] = 1.0
    return {"rgb": _normalise(frames), "gt": torch.from_numpy(gt), "cls_gt": torch.from_numpy(cls_gt),
            "pgt": torch.from_numpy(pgt), "selector": torch.from_numpy(selector),
            "info": {"name": name, "frames": torch.tensor(list(frame_ids), dtype=torch.int64)}}


def _pick_objects(labels_first: np.ndarray, rng: np.random.Generator, max_objects: int) -> list[int]:
    """Target object, then up to ``max_objects - 1`` others, each drawn at random among the rest (the reference's
    choice for two)."""
    labels = [int(v) for v in np.unique(labels_first) if v != 0]
    if not labels:
        return []
    chosen = [int(rng.choice(labels))]
    rest = [v for v in labels if v != chosen[0]]
    while len(chosen) < max_objects and rest:
        chosen.append(int(rng.choice(rest)))
        rest.remove(chosen[-1])
    return chosen


# ------------------------------------------------------------------------------------------------ video clips
class VOSClipDataset(torch.utils.data.Dataset):
    """N-frame clips of annotated videos (DAVIS or YouTube-VOS layout) with the reference's augmentations.

    Per sequence: horizontal flip, RandomResizedCrop(crop_size, crop_scale), ColorJitter(0.1, 0.03, 0.03, 0),
    greyscale with p=0.05. Per frame: RandomAffine(15 deg, shear 10), ColorJitter(0.01, 0.01, 0.01, 0).
    Images are bicubic and masks nearest; pixels outside the image get the mean colour / background.

    Args:
        root: folder with ``JPEGImages/<seq>/*.jpg`` and ``Annotations/<seq>/*.png``.
        layout: ``davis`` (every frame annotated) or ``youtube`` (every 5th; max_skip is divided by 5 and
            only annotated frames are used).
        num_frames: frames per clip.
        crop_size, crop_scale: output size and RandomResizedCrop area range.
        max_objects: objects per clip (1..4).
        sequences, exclude: which sequences to use / never use.
        cache: decode all frames into RAM (uint8) at construction; ``cache_short_side`` downscales them first.
        reverse_prob: probability of reversing the clip in time.
        perturb_iou: IoU range of the perturbed first-frame masks.
        copy_paste_prob: probability of pasting objects of other sequences over the clip.
        copy_paste_max: 1..copy_paste_max objects are pasted (each from another sequence's clip).
        copy_paste_scale: random rescale range of a pasted object; unless it is (1, 1), a pasted object is
            rescaled about its centre, placed at a random position and drifts linearly over the clip.
        motion_blur_prob, motion_blur_max: per-frame linear motion blur (see :func:`motion_blur`).
        augment: False gives a centre crop of the frames without colour or geometric changes (tests, debugging).
        default_max_skip: max_skip used when indexed with a plain int.
        check_masks: decode every annotation once at construction to count empty masks and drop sequences
            without any object (always done when caching; costs ~0.5 ms per mask otherwise).
    Raises:
        InputError: missing root/layout, unknown requested sequence, or no usable sequence left.
    """

    def __init__(self, root: str | os.PathLike[str], *, layout: str = "davis", num_frames: int = 5,
                 crop_size: int = 384, crop_scale: tuple[float, float] = (0.36, 1.0), max_objects: int = 2,
                 sequences: Sequence[str] | None = None, exclude: Sequence[str] = (), cache: bool = False,
                 cache_short_side: int | None = None, reverse_prob: float = 0.5,
                 perturb_iou: tuple[float, float] = (0.85, 1.0), copy_paste_prob: float = 0.0,
                 copy_paste_max: int = 1, copy_paste_scale: tuple[float, float] = (1.0, 1.0),
                 motion_blur_prob: float = 0.0, motion_blur_max: int = 15,
                 augment: bool = True, default_max_skip: int = 5, check_masks: bool = True) -> None:
        if layout not in ("davis", "youtube"):
            raise InputError(f"layout must be 'davis' or 'youtube', got {layout!r}")
        self.root = Path(root)
        self.layout = layout
        self.skip_divisor = 5 if layout == "youtube" else 1
        self.opts = _ClipOptions(num_frames, crop_size, max_objects, tuple(perturb_iou), motion_blur_prob,
                                 motion_blur_max)
        self.crop_scale = tuple(crop_scale)
        self.reverse_prob = reverse_prob
        self.copy_paste_prob = copy_paste_prob
        self.copy_paste_max = copy_paste_max
        self.copy_paste_scale = (float(copy_paste_scale[0]), float(copy_paste_scale[1]))
        self.augment = augment
        self.default_max_skip = default_max_skip
        self.exclude = tuple(exclude)
        self.sequences, self.report = _scan_video_root(self.root, layout, sequences, exclude, num_frames)
        self._cache: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] | None = None
        if cache:
            self._fill_cache(cache_short_side)
        if cache or check_masks:
            self._drop_empty()
        if not self.sequences:
            raise InputError(f"no usable sequence in {self.root}: {self.report.summary()}")
        logger.info("%s (%s): %s", self.root, layout, self.report.summary())

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def _fill_cache(self, short_side: int | None) -> None:
        def load(seq: _Sequence) -> tuple[str, tuple[list[np.ndarray], list[np.ndarray]]]:
            ims = [_shrink(_read_rgb(f), short_side, nearest=False) for f in seq.frames]
            ms = [_shrink(load_label_mask(m), short_side, nearest=True) for m in seq.masks]
            return seq.name, (ims, ms)

        workers = min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as ex:  # cv2/PIL decoding releases the GIL
            self._cache = dict(ex.map(load, self.sequences))
        nbytes = sum(a.nbytes for ims, ms in self._cache.values() for a in (*ims, *ms))
        logger.info("cached %d frames in RAM (%.2f GB)", self.report.frames, nbytes / 1e9)

    def _drop_empty(self) -> None:
        """Count frames whose mask is empty; drop sequences where every mask is empty."""

        def flags(seq: _Sequence) -> list[bool]:
            if self._cache is not None:
                return [bool(m.any()) for m in self._cache[seq.name][1]]
            return [bool(load_label_mask(m).any()) for m in seq.masks]

        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:
            all_flags = list(ex.map(flags, self.sequences))
        keep = []
        for seq, f in zip(self.sequences, all_flags):
            self.report.skipped["empty_mask_frames"] += len(f) - sum(f)
            if any(f):
                keep.append(seq)
            else:
                self.report.skipped["empty_sequences"] += 1
                if self._cache is not None:
                    del self._cache[seq.name]
        if not self.report.skipped["empty_mask_frames"]:
            del self.report.skipped["empty_mask_frames"]
        self.sequences = keep
        self.report.sequences = len(keep)
        self.report.frames = sum(len(s.frames) for s in keep)

    def _load(self, seq: _Sequence, idx: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self._cache is not None:
            ims, ms = self._cache[seq.name]
            return [ims[i] for i in idx], [ms[i] for i in idx]
        ims = [_read_rgb(seq.frames[i]) for i in idx]
        ms = [load_label_mask(seq.masks[i]) for i in idx]
        for i, im, m in zip(idx, ims, ms):
            if im.shape[:2] != m.shape:
                raise InputError(f"{seq.name}: frame {seq.frames[i].name} and its mask differ in size")
        return ims, ms

    def _clip(self, seq: _Sequence, rng: np.random.Generator, max_skip: int
              ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Sample, load and augment one clip: frames (T, S, S, 3) float32, labels (T, S, S) uint8, frame ids."""
        t, s = self.opts.num_frames, self.opts.crop_size
        idx = sample_frame_indices(rng, len(seq.frames), t, max(1, max_skip // self.skip_divisor))
        if rng.random() < self.reverse_prob:
            idx = idx[::-1]
        ims, ms = self._load(seq, idx)
        h, w = ms[0].shape
        if not self.augment:
            side = min(h, w)
            m = _affine(scale=s / side, center=((w - 1) / 2, (h - 1) / 2),
                        translate=((s - 1) / 2 - (w - 1) / 2, (s - 1) / 2 - (h - 1) / 2))
            frames = np.stack([_warp(im, m, s, cv2.INTER_AREA if side > s else cv2.INTER_CUBIC, FILL_MEAN)
                               for im in ims]).astype(np.float32)
            labels = np.stack([_warp(mk, m, s, cv2.INTER_NEAREST, 0) for mk in ms])
            return frames, labels, list(idx)
        # Per sequence: flip + random resized crop (one matrix), colour jitter, greyscale.
        top, left, ch, cw = _rrc_params(rng, h, w, self.crop_scale)
        crop = np.array([[s / cw, 0, -left * s / cw], [0, s / ch, -top * s / ch], [0, 0, 1]])
        if rng.random() < 0.5:
            crop = np.array([[-1, 0, s - 1], [0, 1, 0], [0, 0, 1]]) @ crop
        seq_jit = _jitter_params(rng, 0.1, 0.03, 0.03, 0.0)
        grey = rng.random() < 0.05
        frames, labels = [], []
        c = (s - 1) / 2
        for im, mk in zip(ims, ms):
            # Per frame: RandomAffine(15, shear 10) about the crop centre, composed with the crop.
            m = _affine(rng.uniform(-15, 15), 1.0, rng.uniform(-10, 10), (c, c)) @ crop
            f = _warp(im, m, s, cv2.INTER_CUBIC, FILL_MEAN).astype(np.float32)
            f = _apply_jitter(f, seq_jit)
            if grey:
                f = _to_grey3(f)
            f = _apply_jitter(f, _jitter_params(rng, 0.01, 0.01, 0.01, 0.0))
            frames.append(f)
            labels.append(_warp(mk, m, s, cv2.INTER_NEAREST, 0))
        return np.stack(frames), np.stack(labels), list(idx)

    def __getitem__(self, item: int | SampleSpec) -> dict[str, Any]:
        spec = _as_spec(item, self.default_max_skip)
        rng = np.random.default_rng(spec.seed)
        seq = self.sequences[spec.index % len(self.sequences)]
        for _ in range(_MAX_TRIALS):
            frames, labels, ids = self._clip(seq, rng, spec.max_skip)
            if labels[0].any():
                break
        if self.copy_paste_prob > 0 and len(self.sequences) > 1 and rng.random() < self.copy_paste_prob:
            n_paste = 1 if self.copy_paste_max == 1 else int(rng.integers(1, self.copy_paste_max + 1))
            for _ in range(n_paste):
                frames, labels = self._copy_paste(frames, labels, seq, rng, spec.max_skip)
        objs = _pick_objects(labels[0], rng, self.opts.max_objects)
        obj_masks = np.stack([(labels == v) for v in objs], axis=1).astype(np.float32) if objs else \
            np.zeros((len(ids), 0, *labels.shape[1:]), np.float32)
        frames = np.clip(frames, 0, 255)
        return _assemble(frames, obj_masks, rng, self.opts, seq.name, ids)

    def _copy_paste(self, frames: np.ndarray, labels: np.ndarray, seq: _Sequence, rng: np.random.Generator,
                    max_skip: int) -> tuple[np.ndarray, np.ndarray]:
        """Paste one object of another sequence's clip (all frames) over this clip; it gets a new label.

        With ``copy_paste_scale`` other than (1, 1) the object is rescaled about its frame-0 centre, moved to a
        random position and drifts by a random per-frame velocity (up to 6 % of the crop per frame)."""
        others = [s for s in self.sequences if s.name != seq.name]
        donor = others[int(rng.integers(len(others)))]
        d_frames, d_labels, _ = self._clip(donor, rng, max_skip)
        cand = [int(v) for v in np.unique(d_labels[0]) if v != 0]
        if not cand:
            return frames, labels
        v = int(rng.choice(cand))
        alpha = d_labels == v  # (T, S, S)
        if self.copy_paste_scale != (1.0, 1.0):
            s = self.opts.crop_size
            ys, xs = np.nonzero(alpha[0])
            centre = (float(xs.mean()), float(ys.mean()))
            sc = rng.uniform(*self.copy_paste_scale)
            pos = rng.uniform(0.15, 0.85, size=2) * s
            vel = rng.uniform(-0.06, 0.06, size=2) * s
            warped_f, warped_a = [], []
            for ti in range(len(d_frames)):
                p = pos + vel * ti
                m = _affine(scale=sc, center=centre, translate=(p[0] - centre[0], p[1] - centre[1]))
                warped_f.append(_warp(d_frames[ti], m, s, cv2.INTER_LINEAR, FILL_MEAN))
                warped_a.append(_warp(alpha[ti].astype(np.uint8), m, s, cv2.INTER_NEAREST, 0) > 0)
            d_frames, alpha = np.stack(warped_f), np.stack(warped_a)
            if not alpha[0].any():
                return frames, labels
        new_label = int(labels.max(initial=0)) + 1 if labels.max(initial=0) < 255 else 255
        frames = np.where(alpha[..., None], d_frames, frames)
        labels = np.where(alpha, np.uint8(new_label), labels)
        return frames, labels


# ------------------------------------------------------------------------------------------------ static images
class StaticPseudoVideoDataset(torch.utils.data.Dataset):
    """Pseudo-videos made from single images + masks (stage 0 of the reference, rdevos-spec 6.4).

    Per sequence: random scale 0.8-1.5, flip, ColorJitter(0.1, 0.05, 0.05, 0.05), greyscale p=0.05. Per frame:
    RandomAffine(20 deg, scale 0.9-1.1, shear 10), resize to the crop's short side, random crop,
    ColorJitter(0.1, 0.05, 0.05, 0), and with p=0.33 a thin-plate-spline warp (12 points, sigma 0.02). Masks are
    warped bicubically like the images, so they are soft (as the reference); ``cls_gt`` = mask > 0.5.

    Args:
        root: a DAVIS-layout folder (its frames are used as still images, every ``frame_stride``-th),
            a folder with ``images/`` and ``masks/`` (same relative names), or a tree of ``x.jpg`` + ``x.png``.
        num_frames, crop_size, max_objects, perturb_iou: as :class:`VOSClipDataset`; label maps with several
            labels give up to ``max_objects`` objects; binary/saliency masks (0..255) give one soft object.
        sequences, exclude: for DAVIS-layout roots.
        cache, cache_short_side: decode all images into RAM.
        motion_blur_prob, motion_blur_max: per-frame linear motion blur (see :func:`motion_blur`).
    """

    #: Masks are instance label maps (objects are picked among those visible in the first warped frame), never
    #: one soft saliency mask.
    label_maps = False
    kind = "static"

    def __init__(self, root: str | os.PathLike[str], *, num_frames: int = 3, crop_size: int = 384,
                 max_objects: int = 1, frame_stride: int = 1, sequences: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), cache: bool = False, cache_short_side: int | None = None,
                 perturb_iou: tuple[float, float] = (0.85, 1.0), tps_prob: float = 0.33,
                 motion_blur_prob: float = 0.0, motion_blur_max: int = 15) -> None:
        self.root = Path(root)
        self.opts = _ClipOptions(num_frames, crop_size, max_objects, tuple(perturb_iou), motion_blur_prob,
                                 motion_blur_max)
        self.tps_prob = tps_prob
        self.pairs, self.report = self._scan(frame_stride, sequences, exclude)
        if not self.pairs:
            raise InputError(f"no image/mask pairs found in {self.root}: {self.report.summary()}")
        logger.info("%s (%s): %d images; %s", self.root, self.kind, len(self.pairs), self.report.summary())
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:
                self._cache = list(ex.map(lambda pm: self._read(pm, cache_short_side), self.pairs))

    def _scan(self, frame_stride: int, sequences: Sequence[str] | None, exclude: Sequence[str]
              ) -> tuple[list[tuple[Path, Path]], ScanReport]:
        return _scan_static(self.root, frame_stride, sequences, exclude)

    def _read(self, pair: tuple[Path, Path], short_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        img_p, mask_p = pair
        img = _read_rgb(img_p)
        with Image.open(mask_p) as im:
            if im.mode not in ("P", "L", "1"):
                im = im.convert("L")
            mode = im.mode
            m = np.array(im.convert("L") if mode == "1" else im, dtype=np.uint8)
        if mode == "1":
            m = (m > 0).astype(np.uint8) * 255
        if img.shape[:2] != m.shape:
            raise InputError(f"{img_p} ({img.shape[1]}x{img.shape[0]}) and {mask_p} ({m.shape[1]}x{m.shape[0]}) "
                             "differ in size")
        return _shrink(img, short_side, nearest=False), _shrink(m, short_side, nearest=True)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: int | SampleSpec) -> dict[str, Any]:
        spec = _as_spec(item, 5)
        rng = np.random.default_rng(spec.seed)
        i = spec.index % len(self.pairs)
        img, mask = self._cache[i] if self._cache is not None else self._read(self.pairs[i])
        labels = [int(v) for v in np.unique(mask) if v != 0]
        # Soft saliency masks (many grey levels, or a single 255 label) are one object; label maps keep labels.
        soft = not self.label_maps and mask.max(initial=0) > 1 and (len(labels) > 8 or labels == [255])
        chans: list[np.ndarray] | None = None
        if soft:
            chans = [mask.astype(np.float32) / 255.0]
        elif not self.label_maps:
            objs = _pick_objects(mask, rng, self.opts.max_objects)
            chans = [(mask == v).astype(np.float32) for v in objs]
        t, s = self.opts.num_frames, self.opts.crop_size
        h, w = mask.shape
        c_in = ((w - 1) / 2, (h - 1) / 2)
        seq_m = _affine(0.0, rng.uniform(0.8, 1.5), 0.0, c_in)
        if rng.random() < 0.5:
            seq_m = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ seq_m
        seq_jit = _jitter_params(rng, 0.1, 0.05, 0.05, 0.05)
        grey = rng.random() < 0.05
        frames, masks = [], []
        for _ in range(t):
            m = _affine(rng.uniform(-20, 20), rng.uniform(0.9, 1.1), rng.uniform(-10, 10), c_in) @ seq_m
            r = s / min(h, w)  # Resize(short side = crop) then RandomCrop(crop)
            top = rng.integers(0, max(round(h * r) - s, 0) + 1)
            left = rng.integers(0, max(round(w * r) - s, 0) + 1)
            m = np.array([[r, 0, -left], [0, r, -top], [0, 0, 1]]) @ m
            f = _warp(img, m, s, cv2.INTER_CUBIC, FILL_MEAN).astype(np.float32)
            if chans is None:  # label maps: the objects seen in the first frame (at least 0.1 % of the crop)
                seen = _warp(mask, m, s, cv2.INTER_NEAREST, 0)
                ids, counts = np.unique(seen, return_counts=True)
                keep = (ids != 0) & (counts >= max(s * s // 1000, 4))
                objs = _pick_objects(np.isin(seen, ids[keep]) * seen, rng, self.opts.max_objects)
                chans = [(mask == v).astype(np.float32) for v in objs]
            ms = [np.clip(_warp(ch, m, s, cv2.INTER_CUBIC, 0), 0, 1) for ch in chans]
            if rng.random() < self.tps_prob:
                mx, my = _tps_map(rng, s)
                f = cv2.remap(f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL_MEAN)
                ms = [cv2.remap(x, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                      for x in ms]
            f = _apply_jitter(f, seq_jit)
            if grey:
                f = _to_grey3(f)
            f = _apply_jitter(f, _jitter_params(rng, 0.1, 0.05, 0.05, 0.0))
            frames.append(f)
            masks.append(np.stack(ms) if ms else np.zeros((0, s, s), np.float32))
        obj_masks = np.stack(masks).astype(np.float32)  # (T, n, S, S)
        return _assemble(np.clip(np.stack(frames), 0, 255), obj_masks, rng, self.opts,
                         f"{self.kind}:{self.pairs[i][0].name}", [0] * t)


# ------------------------------------------------------------------------------------------------ COCO (YOLO-seg)
class CocoPseudoVideoDataset(StaticPseudoVideoDataset):
    """Multi-object pseudo-videos made from images with instance polygons in the YOLO-seg layout (e.g.
    ``coco128-seg``: ``images/<split>/<name>.jpg`` with ``labels/<split>/<name>.txt``).

    The warps and jitter are :class:`StaticPseudoVideoDataset`'s; the instances form a label map (see
    :func:`read_yolo_seg`) and up to ``max_objects`` of those visible in the first warped frame are the clip's
    objects; the other instances stay in the picture as unlabelled look-alikes.

    Args:
        sequences, exclude: image file stems to use / never use (held-out images).
        min_area: instances smaller than this many pixels (at the cached size) are left unlabelled.
        Others: as :class:`StaticPseudoVideoDataset`.
    """

    label_maps = True
    kind = "coco"

    def __init__(self, root: str | os.PathLike[str], *, min_area: int = 0, **kwargs: Any) -> None:
        self.min_area = min_area
        super().__init__(root, **kwargs)

    def _scan(self, frame_stride: int, sequences: Sequence[str] | None, exclude: Sequence[str]
              ) -> tuple[list[tuple[Path, Path]], ScanReport]:
        iroot, lroot = self.root / "images", self.root / "labels"
        if not iroot.is_dir() or not lroot.is_dir():
            raise InputError(f"{self.root} is not a YOLO-seg dataset: need images/ and labels/ folders")
        report = ScanReport()
        pairs = []
        wanted = None if sequences is None else set(sequences)
        excluded = set(exclude)
        for p in sorted(iroot.rglob("*")):
            if p.suffix.lower() not in IMG_EXT:
                continue
            if p.stem in excluded or (wanted is not None and p.stem not in wanted):
                report.skipped["excluded"] += 1
                continue
            lab = (lroot / p.relative_to(iroot)).with_suffix(".txt")
            if not lab.is_file():
                report.skipped["missing_labels"] += 1
                continue
            pairs.append((p, lab))
        if wanted is not None:
            missing = sorted(wanted - {p.stem for p, _ in pairs} - excluded)
            if missing:
                raise InputError(f"images not found in {iroot}: {missing[:8]}")
        pairs = pairs[::frame_stride]
        report.frames = len(pairs)
        return pairs, report

    def _read(self, pair: tuple[Path, Path], short_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        img = _shrink(_read_rgb(pair[0]), short_side, nearest=False)
        return img, read_yolo_seg(pair[1], *img.shape[:2], min_area=self.min_area)


# ------------------------------------------------------------------------------------------------ synthetic
def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 texture: random colour + multi-scale noise + optional stripes/checker."""
    base = rng.uniform(20, 235, size=3)
    tex = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    for cells in (2, 5, 11):
        amp = rng.uniform(5, 45)
        noise = rng.normal(0, 1, size=(cells, cells, 3)).astype(np.float32)
        tex += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * amp
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 1:
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        stripes = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period)
        tex += (stripes[..., None] * rng.uniform(15, 60, size=3)).astype(np.float32)
    elif kind == 2:
        period = int(rng.integers(4, 14))
        checker = ((xx // period + yy // period) % 2 * 2 - 1).astype(np.float32)
        tex += checker[..., None] * rng.uniform(15, 60, size=3).astype(np.float32)
    return np.clip(tex, 0, 255)


def _shape_polygon(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A random star-convex polygon (or ellipse) centred at 0, (n, 2) float."""
    if rng.random() < 0.35:
        ax, ay = radius * rng.uniform(0.5, 1.0), radius * rng.uniform(0.5, 1.0)
        a = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([ax * np.cos(a), ay * np.sin(a)], 1)
    n = int(rng.integers(3, 10))
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.45, 1.0, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


class SyntheticVideoDataset(torch.utils.data.Dataset):
    """Procedural videos of moving textured shapes over a panning textured background, with occlusions.

    Each item is a pure function of (``seed``, index): same index, same clip. Shapes translate, rotate and scale
    over time and occlude each other in a fixed depth order; the labels are the visible parts. Useful for tests
    and stage-0-like pretraining without any dataset on disk.

    Args:
        length: number of distinct videos.
        num_frames, crop_size, max_objects, perturb_iou: as :class:`VOSClipDataset`.
        max_shapes: shapes per video (1..max_shapes); objects are chosen among those visible in frame 0.
        seed: dataset seed.
    """

    def __init__(self, length: int = 1000, *, num_frames: int = 5, crop_size: int = 384, max_objects: int = 2,
                 perturb_iou: tuple[float, float] = (0.85, 1.0), max_shapes: int = 3, seed: int = 0) -> None:
        if length < 1:
            raise InputError("SyntheticVideoDataset needs length >= 1")
        self.length = length
        self.opts = _ClipOptions(num_frames, crop_size, max_objects, tuple(perturb_iou))
        self.max_shapes = max_shapes
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Frames (T, S, S, 3) float32 and label maps (T, S, S) uint8 of video ``index`` (plus its generator)."""
        rng = np.random.default_rng([self.seed, index])
        t, s = self.opts.num_frames, self.opts.crop_size
        for _ in range(10):
            big = int(s * 1.5)
            bg = _texture(rng, big)
            pan = rng.uniform(-0.04, 0.04, size=2) * s
            n = int(rng.integers(1, self.max_shapes + 1))
            shapes = []
            for _k in range(n):
                radius = s * rng.uniform(0.12, 0.3)
                shapes.append({
                    "poly": _shape_polygon(rng, radius), "tex": _texture(rng, s),
                    "pos": rng.uniform(0.2, 0.8, size=2) * s, "vel": rng.uniform(-0.07, 0.07, size=2) * s,
                    "angle": rng.uniform(0, 360), "spin": rng.uniform(-10, 10),
                    "scale": 1.0, "grow": rng.uniform(-0.03, 0.03)})
            gain = rng.uniform(-10, 10)
            frames = np.empty((t, s, s, 3), np.float32)
            labels = np.zeros((t, s, s), np.uint8)
            for ti in range(t):
                ox = int(np.clip(big / 2 - s / 2 + pan[0] * ti, 0, big - s))
                oy = int(np.clip(big / 2 - s / 2 + pan[1] * ti, 0, big - s))
                img = bg[oy:oy + s, ox:ox + s].copy()
                lab = labels[ti]
                for k, sh in enumerate(shapes, start=1):
                    ang = sh["angle"] + sh["spin"] * ti
                    sc = sh["scale"] * (1 + sh["grow"]) ** ti
                    pos = sh["pos"] + sh["vel"] * ti
                    m = _affine(ang, sc, 0.0, (0.0, 0.0), (float(pos[0]), float(pos[1])))
                    pts = sh["poly"] @ m[:2, :2].T + m[:2, 2]
                    mask = np.zeros((s, s), np.uint8)
                    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
                    # Texture moves with the shape: texture centre -> shape position.
                    mt = m @ np.array([[1, 0, -s / 2], [0, 1, -s / 2], [0, 0, 1]])
                    tex = _warp(sh["tex"], mt, s, cv2.INTER_LINEAR, 0)
                    sel = mask.astype(bool)
                    img[sel] = tex[sel]
                    lab[sel] = k
                img += gain * ti / max(t - 1, 1) + rng.normal(0, 2.0, size=img.shape).astype(np.float32)
                frames[ti] = np.clip(img, 0, 255)
            if labels[0].any():
                break
        return frames, labels, rng

    def __getitem__(self, item: int | SampleSpec) -> dict[str, Any]:
        spec = _as_spec(item, 5)
        index = spec.index % self.length
        frames, labels, rng = self.render(index)
        objs = _pick_objects(labels[0], rng, self.opts.max_objects)
        obj_masks = np.stack([(labels == v) for v in objs], axis=1).astype(np.float32) if objs else \
            np.zeros((labels.shape[0], 0, *labels.shape[1:]), np.float32)
        return _assemble(frames, obj_masks, rng, self.opts, f"synthetic:{index}", range(labels.shape[0]))


# ------------------------------------------------------------------------------------------------ mixing, sampling
class MixedDataset(torch.utils.data.Dataset):
    """Concatenation of datasets addressed by a global index (a :class:`SampleSpec` passes through)."""

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset]) -> None:
        self.datasets = list(datasets)
        self.lengths = [len(d) for d in self.datasets]  # type: ignore[arg-type]
        self.offsets = np.cumsum([0, *self.lengths])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, item: int | SampleSpec) -> dict[str, Any]:
        spec = _as_spec(item, 5)
        k = int(np.searchsorted(self.offsets, spec.index, side="right") - 1)
        if not 0 <= k < len(self.datasets):
            raise IndexError(spec.index)
        return self.datasets[k][spec._replace(index=spec.index - int(self.offsets[k]))]


class ClipSampler(torch.utils.data.Sampler[list[SampleSpec]]):
    """Deterministic, resumable, sharded batch sampler: yields one list of :class:`SampleSpec` per iteration.

    Each epoch is a seeded permutation of the sources' items, source i repeated ``weights[i]`` times (the
    reference's ``ConcatDataset`` with DAVIS x5; a fractional part draws a random subset). Like
    ``DistributedSampler``, the epoch is padded to a multiple of ``world_size`` and rank r takes every
    ``world_size``-th item starting at r. Batches run continuously across epochs. Iteration ``it`` of rank r
    depends only on (seed, it, r, world_size), so resuming at ``start`` continues the exact same stream.

    Args:
        lengths, weights: per-source sizes and repeat factors.
        batch_size: clips per batch (per rank).
        iterations: stage length; ``max_skip_at(it)`` gives the curriculum value stamped on each spec.
    """

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], batch_size: int, iterations: int, *,
                 seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
                 max_skip_at: Any = None) -> None:
        self.lengths, self.weights = list(lengths), list(weights)
        self.batch_size, self.iterations = batch_size, iterations
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start
        self.max_skip_at = max_skip_at or (lambda it: 5)
        self.offsets = np.cumsum([0, *self.lengths])
        per_epoch = sum(self._count(i) for i in range(len(self.lengths)))
        if per_epoch == 0:
            raise InputError("the data mix is empty (all weights are 0 or all sources are empty)")
        self.per_rank = math.ceil(per_epoch / world_size)
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def _count(self, i: int) -> int:
        return int(math.floor(self.weights[i])) * self.lengths[i] + \
            int(round((self.weights[i] % 1) * self.lengths[i]))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's global item indices of ``epoch``."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        parts = []
        for i, (n, w) in enumerate(zip(self.lengths, self.weights)):
            reps, frac = int(math.floor(w)), w % 1
            idx = [np.tile(np.arange(n), reps)]
            if frac > 0:
                idx.append(rng.choice(n, int(round(frac * n)), replace=False))
            parts.append(np.concatenate(idx).astype(np.int64) + int(self.offsets[i]))
        order = rng.permutation(np.concatenate(parts))
        total = self.per_rank * self.world_size
        if total > len(order):  # pad like DistributedSampler (repeat from the start)
            order = np.concatenate([order, np.resize(order, total - len(order))])
        mine = order[self.rank::self.world_size]
        self._epoch_cache = (epoch, mine)
        return mine

    def batch(self, it: int) -> list[SampleSpec]:
        """The batch of iteration ``it`` for this rank."""
        out = []
        skip = int(self.max_skip_at(it))
        for j in range(self.batch_size):
            pos = it * self.batch_size + j
            epoch, off = divmod(pos, self.per_rank)
            order = self.epoch_order(epoch)
            sseed = int(np.random.SeedSequence([self.seed, epoch, off, self.rank, self.world_size])
                        .generate_state(1)[0])
            out.append(SampleSpec(int(order[off]), sseed, skip))
        return out

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        for it in range(self.start, self.iterations):
            yield self.batch(it)

    def __len__(self) -> int:
        return max(self.iterations - self.start, 0)
