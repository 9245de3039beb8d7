"""Reading, validating and atomically writing label masks and soft probabilities.

A label mask is a ``uint8`` ``(H, W)`` map: 0 is background, ``k > 0`` is object ``k``.
All writers write to a temporary file in the destination folder and then
``os.replace`` it, so an interrupted run never leaves a half-written file behind
(atomic against process interruption; no ``fsync``, so not against power loss).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image

from rdevos.errors import InputError

__all__ = [
    "DAVIS_PALETTE",
    "LabelMask",
    "read_mask",
    "as_label_mask",
    "validate_mask",
    "write_mask",
    "write_probabilities",
    "read_probabilities",
    "write_object_masks",
    "atomic_write",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


def _voc_colormap(n: int = 256) -> tuple[int, ...]:
    """PASCAL VOC colour map (bit-interleaved), as a flat ``(r, g, b, r, g, b, ...)`` tuple."""
    out: list[int] = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return tuple(out)


#: The standard PASCAL VOC / DAVIS palette: 256 * 3 ints (label 1 = (128, 0, 0), 2 = (0, 128, 0), ...).
DAVIS_PALETTE: tuple[int, ...] = _voc_colormap(256)


@dataclass
class LabelMask:
    """A label map and the palette it was stored with.

    Attributes:
        labels: ``uint8`` array ``(H, W)``; 0 = background, ``k`` = object ``k``.
        palette: flat 768-int palette of the source PNG, ``None`` when it had none.
    """

    labels: np.ndarray
    palette: list[int] | None = field(default=None)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @property
    def object_ids(self) -> list[int]:
        """Sorted non-zero labels present in the mask."""
        return [int(v) for v in np.unique(self.labels) if v != 0]


def _pad_palette(palette: Sequence[int]) -> list[int]:
    pal = [int(v) for v in palette][:768]
    if any(v < 0 or v > 255 for v in pal):
        raise InputError("palette values must be in 0..255")
    if len(pal) < 768:
        pal += list(DAVIS_PALETTE[len(pal):]) if len(pal) % 3 == 0 else [0] * (768 - len(pal))
    return pal


_MODE_FIX = (
    "save it as a label map: a palette ('P') or greyscale ('L') PNG whose pixel values are object ids "
    "(0 = background, 1, 2, ... = objects), e.g. rdevos.io.masks.write_mask(path, labels) or "
    "PIL.Image.fromarray(labels.astype('uint8'), mode='L').save(path)"
)


def read_mask(path: PathLike) -> LabelMask:
    """Read a label-map PNG (or any lossless image) as a :class:`LabelMask`.

    Accepted modes: ``'P'`` (palette indices are labels), ``'L'`` (values are labels) and
    ``'1'`` (binary -> labels 0/1). An ``'L'`` mask whose only values are 0 and 255 is a
    binary black/white mask and is read as labels 0/1.

    Args:
        path: mask file.

    Returns:
        :class:`LabelMask` with ``uint8`` ``(H, W)`` labels.

    Raises:
        InputError: missing/corrupt file or a colour (RGB/RGBA/...) image.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"mask '{p}' does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                labels = np.array(im, dtype=np.uint8)
                raw = im.getpalette()
                palette = _pad_palette(raw) if raw else None
            elif mode == "L":
                labels = np.array(im, dtype=np.uint8)
                palette = None
                values = np.unique(labels)
                if values.size and values[-1] == 255 and set(values.tolist()) <= {0, 255}:
                    logger.info("mask '%s' is black/white (0/255): reading it as a binary mask (label 1)", p)
                    labels = (labels == 255).astype(np.uint8)
            elif mode == "1":
                labels = np.array(im, dtype=bool).astype(np.uint8)
                palette = None
            else:
                raise InputError(f"mask '{p}' is a {mode} image; masks must not be colour images: {_MODE_FIX}")
    except InputError:
        raise
    except _PIL_ERRORS as exc:
        raise InputError(f"cannot read mask '{p}' (corrupt or not an image): {exc}") from exc
    return LabelMask(np.ascontiguousarray(labels), palette)


def as_label_mask(obj: LabelMask | np.ndarray | Image.Image | PathLike) -> LabelMask:
    """Coerce a mask given as a path, PIL image, array or :class:`LabelMask`.

    Arrays are taken literally (values are labels): ``bool`` -> 0/1, integer dtypes must
    lie in 0..255, a trailing singleton channel is squeezed.

    Args:
        obj: the mask.

    Returns:
        :class:`LabelMask`.

    Raises:
        InputError: unsupported type, shape, dtype, value range or image mode.
    """
    if isinstance(obj, LabelMask):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_mask(obj)
    if isinstance(obj, Image.Image):
        if obj.mode == "P":
            raw = obj.getpalette()
            return LabelMask(np.array(obj, dtype=np.uint8), _pad_palette(raw) if raw else None)
        if obj.mode == "L":
            return LabelMask(np.array(obj, dtype=np.uint8), None)
        if obj.mode == "1":
            return LabelMask(np.array(obj, dtype=bool).astype(np.uint8), None)
        raise InputError(f"mask image is a {obj.mode} image; masks must not be colour images: {_MODE_FIX}")
    if isinstance(obj, np.ndarray):
        return LabelMask(_labels_from_array(obj), None)
    try:  # torch tensors and other array-likes
        arr = np.asarray(obj)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot use a {type(obj).__name__} as a mask") from exc
    if arr.dtype == object:
        raise InputError(f"cannot use a {type(obj).__name__} as a mask")
    return LabelMask(_labels_from_array(arr), None)


def _labels_from_array(arr: np.ndarray, what: str = "mask array") -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(
            f"{what} must be a 2-D HxW label map, got shape {arr.shape}"
            + ("; a colour mask is not a label map: " + _MODE_FIX if arr.ndim == 3 else "")
        )
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{what} has non-integer float values; pass integer labels (0 = background)")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} has unsupported dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"{what} values must be labels in 0..255, got {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(arr.astype(np.uint8))


def validate_mask(
    mask: LabelMask | np.ndarray | Image.Image | PathLike,
    frame_size: tuple[int, int],
    *,
    allow_empty: bool = False,
    max_objects: int = 255,
    name: str = "mask",
) -> LabelMask:
    """Check that a mask fits the frames it annotates.

    Args:
        mask: the mask (``(H, W)`` labels; anything :func:`as_label_mask` accepts).
        frame_size: ``(height, width)`` of the frames.
        allow_empty: accept a mask with no object (all zero).
        max_objects: largest accepted number of distinct objects.
        name: how to call the mask in messages (e.g. its file name).

    Returns:
        The mask as a :class:`LabelMask`.

    Raises:
        InputError: size mismatch, empty mask, or too many objects.
    """
    lm = as_label_mask(mask)
    fh, fw = int(frame_size[0]), int(frame_size[1])
    mh, mw = lm.size
    if (mh, mw) != (fh, fw):
        raise InputError(
            f"{name} has size {mh}x{mw} (HxW) but the frames are {fh}x{fw} (HxW); "
            "resize the mask with nearest-neighbour interpolation to the frame size"
        )
    ids = lm.object_ids
    if not ids and not allow_empty:
        raise InputError(f"{name} contains no object: every pixel is 0 (background)")
    if len(ids) > max_objects:
        raise InputError(
            f"{name} has {len(ids)} distinct labels (more than {max_objects}); it looks like an "
            "anti-aliased or photographic image rather than a label map"
        )
    return lm


# --------------------------------------------------------------------------- atomic writing


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for writing; ``os.replace`` it onto ``path`` on success.

    Parent folders are created. On error the temporary file is removed and ``path`` is untouched.

    Args:
        path: final destination.

    Yields:
        A binary file object.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as fh:  # honours the umask, unlike tempfile's 0600
            yield fh
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _labels_for_writing(labels: np.ndarray | LabelMask) -> np.ndarray:
    if isinstance(labels, LabelMask):
        return labels.labels
    return _labels_from_array(np.asarray(labels), "labels")


def write_mask(
    path: PathLike,
    labels: np.ndarray | LabelMask,
    palette: Sequence[int] | None = DAVIS_PALETTE,
) -> Path:
    """Write a label map as a palette PNG, atomically.

    Args:
        path: destination (``.png``).
        labels: ``(H, W)`` integer labels in 0..255 (or a :class:`LabelMask`).
        palette: flat palette (up to 768 ints; shorter ones are completed with ``DAVIS_PALETTE``).

    Returns:
        The destination path.
    """
    arr = _labels_for_writing(labels)
    if palette is None:
        palette = DAVIS_PALETTE
    pim = Image.fromarray(arr)  # 2-D uint8 -> mode 'L'; putpalette turns it into 'P', values kept
    pim.putpalette(_pad_palette(palette))
    buf = io.BytesIO()
    pim.save(buf, format="PNG", optimize=False)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)


def write_probabilities(
    path: PathLike,
    probs: np.ndarray,
    object_ids: Sequence[int] | None = None,
) -> Path:
    """Save soft masks as a compressed ``.npz`` of ``uint8`` (``round(prob * 255)``), atomically.

    The archive holds ``probs`` (``uint8`` ``(C, H, W)``) and, when given, ``object_ids``
    (``int32`` ``(C,)``, the label of each channel).

    Args:
        path: destination (``.npz`` by convention; the name is used as given).
        probs: float ``(K+1, H, W)`` (with background) or ``(K, H, W)`` probabilities in
            ``[0, 1]`` (numpy array or CPU tensor).
        object_ids: optional channel labels.

    Returns:
        The destination path.

    Raises:
        InputError: wrong rank, non-finite values or values outside ``[0, 1]``.
    """
    arr = np.asarray(probs, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"probabilities must have shape (K, H, W), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("probabilities contain NaN or infinite values")
    if arr.size and (arr.min() < -1e-3 or arr.max() > 1 + 1e-3):
        raise InputError(f"probabilities must lie in [0, 1], got {arr.min():.4g}..{arr.max():.4g}")
    q = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    payload: dict[str, np.ndarray] = {"probs": q}
    if object_ids is not None:
        ids = np.asarray(list(object_ids), dtype=np.int32)
        if ids.shape != (arr.shape[0],):
            raise InputError(f"got {ids.size} object ids for {arr.shape[0]} probability channels")
        payload["object_ids"] = ids
    buf = io.BytesIO()
    np.savez_compressed(buf, **payload)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)


def read_probabilities(path: PathLike) -> np.ndarray:
    """Load probabilities written by :func:`write_probabilities`.

    Args:
        path: the ``.npz`` file.

    Returns:
        ``float32`` array ``(C, H, W)`` in ``[0, 1]`` (quantised to 1/255).
    """
    try:
        with np.load(Path(path)) as data:
            q = data["probs"]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read probabilities '{path}': {exc}") from exc
    return q.astype(np.float32) / 255.0


def write_object_masks(
    directory: PathLike,
    name: str,
    labels: np.ndarray | LabelMask,
    obj_ids: Iterable[int],
) -> list[Path]:
    """Write one binary PNG per object: ``<directory>/<obj_id>/<name>.png`` (mode ``'L'``, 0/255).

    Objects absent from ``labels`` get an all-black mask, so every object has one file per frame.

    Args:
        directory: output root.
        name: frame name (file stem).
        labels: ``(H, W)`` label map.
        obj_ids: object labels to write.

    Returns:
        Paths written, in ``obj_ids`` order.
    """
    arr = _labels_for_writing(labels)
    root = Path(directory)
    out: list[Path] = []
    for oid in obj_ids:
        oid = int(oid)
        if not 0 < oid <= 255:
            raise InputError(f"object id {oid} must be in 1..255")
        binary = np.where(arr == oid, 255, 0).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(binary).save(buf, format="PNG")
        dest = root / str(oid) / f"{name}.png"
        with atomic_write(dest) as fh:
            fh.write(buf.getvalue())
        out.append(dest)
    return out
