"""Reading training data from disk: DAVIS/YouTube-VOS-layout sequences, image/mask pairs, YOLO-seg instance polygons.

Used by the datasets of :mod:`rdevos.train.data`; every reader raises :class:`~rdevos.errors.InputError` with the
file it could not use, and the folder scans count what they skipped (:class:`ScanReport`).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.masks import read_mask

logger = logging.getLogger(__name__)

__all__ = ["load_label_mask", "read_sequence", "read_yolo_seg", "ScanReport", "IMG_EXT"]

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_label_mask(path: Path) -> np.ndarray:
    """Read an annotation PNG as an (H, W) uint8 label map (:func:`rdevos.io.masks.read_mask`'s rule: an 'L' mask
    using only {0, 255} is binary, 255 -> 1; ``1``-bit masks become {0, 1}).

    Raises:
        InputError: unreadable file or a colour (RGB/RGBA) mask.
    """
    return read_mask(path, colour=False).labels


def _read_rgb(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise InputError(f"cannot read image {path}")
    return np.ascontiguousarray(im[:, :, ::-1])


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only."""
    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _shrink(img: np.ndarray, short_side: int | None, *, nearest: bool) -> np.ndarray:
    if short_side is None:
        return img
    h, w = img.shape[:2]
    s = short_side / min(h, w)
    if s >= 1:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def read_sequence(root: str | os.PathLike[str], name: str, *, max_frames: int | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (H, W, 3 uint8 RGB) and label maps (H, W uint8) of a DAVIS-layout sequence (all frames annotated).

    Raises:
        InputError: missing folders, no frames, a frame without annotation or sizes that differ.
    """
    root = Path(root)
    jdir, adir = root / "JPEGImages" / name, root / "Annotations" / name
    if not jdir.is_dir() or not adir.is_dir():
        raise InputError(f"sequence {name!r} not found under {root} (need JPEGImages/{name} and Annotations/{name})")
    frames = sorted(p for p in jdir.iterdir() if p.suffix.lower() in IMG_EXT)[:max_frames]
    if not frames:
        raise InputError(f"sequence {name!r} has no frames in {jdir}")
    images, masks = [], []
    for f in frames:
        mp = adir / (f.stem + ".png")
        if not mp.is_file():
            raise InputError(f"sequence {name!r}: frame {f.name} has no annotation {mp}")
        im, m = _read_rgb(f), load_label_mask(mp)
        if im.shape[:2] != m.shape:
            raise InputError(f"sequence {name!r}: frame {f.name} is {im.shape[1]}x{im.shape[0]} but its mask is "
                             f"{m.shape[1]}x{m.shape[0]} (WxH)")
        images.append(im)
        masks.append(m)
    return images, masks




@dataclass
class _Sequence:
    name: str
    frames: list[Path]
    masks: list[Path]


@dataclass
class ScanReport:
    """What a dataset scan kept and skipped (also logged)."""

    sequences: int = 0
    frames: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)

    def summary(self) -> str:
        s = f"{self.sequences} sequences, {self.frames} frames"
        if self.skipped:
            s += "; skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return s


def _scan_video_root(root: Path, layout: str, sequences: Sequence[str] | None, exclude: Sequence[str],
                     min_frames: int) -> tuple[list[_Sequence], ScanReport]:
    jroot, aroot = root / "JPEGImages", root / "Annotations"
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    if not jroot.is_dir() or not aroot.is_dir():
        raise InputError(f"{root} is not a {layout}-layout dataset: need JPEGImages/ and Annotations/ folders")
    if (jroot / "480p").is_dir() and (aroot / "480p").is_dir():  # the DAVIS release nests a resolution level
        jroot, aroot = jroot / "480p", aroot / "480p"
    report = ScanReport()
    names = sorted(p.name for p in jroot.iterdir() if p.is_dir())
    excluded = set(exclude)
    if sequences is not None:
        missing = [s for s in sequences if s not in names]
        if missing:
            raise InputError(f"sequences not found in {jroot}: {missing[:8]}")
        names = [s for s in sequences]
    out = []
    for name in names:
        if name in excluded:
            report.skipped["excluded"] += 1
            continue
        adir = aroot / name
        if not adir.is_dir():
            report.skipped["missing_masks"] += 1
            logger.debug("%s: no annotation folder %s", name, adir)
            continue
        imgs = sorted(p for p in (jroot / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        ann = {p.stem: p for p in adir.iterdir() if p.suffix.lower() == ".png"}
        frames, masks = [], []
        for f in imgs:
            m = ann.get(f.stem)
            if m is None:
                report.skipped["unannotated_frames"] += 1
                continue
            try:
                if _image_size(f) != _image_size(m):
                    report.skipped["size_mismatch_frames"] += 1
                    logger.debug("%s: %s and its mask differ in size", name, f.name)
                    continue
            except OSError:
                report.skipped["unreadable_frames"] += 1
                continue
            frames.append(f)
            masks.append(m)
        if not frames:
            report.skipped["missing_masks" if not ann else "no_usable_frames"] += 1
            continue
        if len(frames) < min_frames:
            report.skipped["too_short"] += 1
            continue
        out.append(_Sequence(name, frames, masks))
    report.sequences = len(out)
    report.frames = sum(len(s.frames) for s in out)
    return out, report



def _scan_static(root: Path, frame_stride: int, sequences: Sequence[str] | None, exclude: Sequence[str]
                 ) -> tuple[list[tuple[Path, Path]], ScanReport]:
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    report = ScanReport()
    pairs: list[tuple[Path, Path]] = []
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        seqs, report = _scan_video_root(root, "davis", sequences, exclude, 1)
        for s in seqs:
            pairs += list(zip(s.frames, s.masks))[::frame_stride]
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        masks = {p.relative_to(root / "masks").with_suffix(""): p for p in (root / "masks").rglob("*.png")}
        for p in sorted((root / "images").rglob("*")):
            if p.suffix.lower() not in IMG_EXT:
                continue
            m = masks.get(p.relative_to(root / "images").with_suffix(""))
            if m is None:
                report.skipped["missing_masks"] += 1
            else:
                pairs.append((p, m))
    else:  # FSS-1000 / prepared saliency sets: name.jpg next to name.png
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg"):
                m = p.with_suffix(".png")
                if m.is_file():
                    pairs.append((p, m))
                else:
                    report.skipped["missing_masks"] += 1
    report.frames = len(pairs)
    return pairs, report



def read_yolo_seg(path: Path, height: int, width: int, *, min_area: int = 0) -> np.ndarray:
    """Rasterise a YOLO-seg label file (one instance a line: ``class x1 y1 x2 y2 ...``, vertices normalised to the
    image size) into an (H, W) uint8 instance label map: instance i (file order) gets label i + 1, a later instance
    is drawn over an earlier one (at most 255 instances). Instances with fewer than ``min_area`` visible pixels are
    left unlabelled (0).

    Raises:
        InputError: a line that is not a class id followed by an even number (>= 6) of coordinates.
    """
    lab = np.zeros((height, width), np.uint8)
    scale = np.array([width, height], np.float64)
    n = 0
    for ln, line in enumerate(Path(path).read_text().splitlines(), start=1):
        vals = line.split()
        if not vals:
            continue
        try:
            coords = np.array([float(v) for v in vals[1:]], np.float64)
            int(vals[0])
        except ValueError:
            raise InputError(f"{path}:{ln}: not a YOLO-seg line (class id, then x y pairs)") from None
        if coords.size < 6 or coords.size % 2:
            raise InputError(f"{path}:{ln}: a polygon needs an even number (>= 6) of coordinates, got {coords.size}")
        if n == 255:
            logger.warning("%s: more than 255 instances; the rest are ignored", path)
            break
        n += 1
        pts = np.round(coords.reshape(-1, 2) * scale * 16).astype(np.int32)
        cv2.fillPoly(lab, [pts], n, lineType=cv2.LINE_8, shift=4)
    if min_area > 0 and n:
        counts = np.bincount(lab.ravel(), minlength=n + 1)
        small = np.nonzero(counts < min_area)[0]
        lab[np.isin(lab, small[small > 0])] = 0
    return lab
