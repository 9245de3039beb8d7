"""Reading, validating and atomically writing label masks and soft probabilities.

A label mask is a ``uint8`` ``(H, W)`` map: 0 is background, ``k > 0`` is object ``k``.
All writers write to a temporary file in the destination folder and then
``os.replace`` it, so an interrupted run never leaves a half-written file behind
(atomic against process interruption; no ``fsync``, so not against power loss).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.atomic import atomic_write
from rdevos.io.frames import upright

__all__ = [
    "DAVIS_PALETTE",
    "LabelMask",
    "read_mask",
    "as_label_mask",
    "validate_mask",
    "fit_mask_to_frame",
    "labels_from_colours",
    "MAX_MASK_COLOURS",
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

#: Most distinct non-background colours an RGB(A) mask may have. More means a photo, a JPEG-compressed or an
#: anti-aliased drawing rather than a label map (use a palette PNG for more objects).
MAX_MASK_COLOURS = 32

#: Formats that always compress lossily: in these even one grey value without a region is an artefact.
_LOSSY_FORMATS = ("JPEG", "MPO")

#: Image modes read as colour masks (see :func:`labels_from_colours`).
_COLOUR_MODES = ("RGB", "RGBA", "LA")

_DAVIS_INDEX: dict[int, int] = {}
for _i in range(255, 0, -1):  # lowest index wins if a colour repeats
    _DAVIS_INDEX[(DAVIS_PALETTE[3 * _i] << 16) | (DAVIS_PALETTE[3 * _i + 1] << 8) | DAVIS_PALETTE[3 * _i + 2]] = _i


def _article(word: str) -> str:
    """'a' or 'an' before an image mode or acronym read letter by letter ('an RGB', 'a CMYK', 'an I;16')."""
    return "an" if word[:1].upper() in "AEFHILMNORSX" else "a"


#: A grey value is a *level* (a label) when at least this share of its pixels lie inside a flat region (all four
#: neighbours share the value); values below it form no region of their own: the grey edge pixels a JPEG or an
#: anti-aliased drawing puts between its levels. 10 %: JPEG artefacts measure 0-2 %, objects of 3x3 pixels or more 44 %
#: and up.
_FLAT_SHARE = 0.10
#: Most pixels, as a share of the image, that snapping edge values to the nearest level may change; more means the
#: image is not a label map with a few levels (a photo, a blurred image).
_MAX_SNAPPED = 0.25
#: In a lossy mask, levels this close to 255 are white.
_WHITE_DRIFT = 8


def _flat_counts(grey: np.ndarray) -> np.ndarray:
    """Pixels per grey value whose four neighbours share their value (edges replicated)."""
    p = np.pad(grey, 1, mode="edge")
    c = p[1:-1, 1:-1]
    flat = (c == p[:-2, 1:-1]) & (c == p[2:, 1:-1]) & (c == p[1:-1, :-2]) & (c == p[1:-1, 2:])
    return np.bincount(grey[flat], minlength=256)


def _grey_labels(grey: np.ndarray, what: str, lossy: bool = False) -> np.ndarray:
    """Greyscale values are labels; a mask whose only values are 0 and 255 is binary (label 1).

    A lossy mask (JPEG-compressed, anti-aliased or blurred: grey values that form no flat region, between a few
    levels that do) is cleaned: every such pixel gets the nearest level, with a warning that names the mask and the
    number of pixels changed; one the levels cannot explain is refused. Values without a flat region that are fewer
    than two and than the non-zero levels are taken literally (thin objects of a real label map), except in a JPEG
    file (``lossy``).
    """
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    count = np.bincount(grey.ravel(), minlength=256)
    values = np.flatnonzero(count)
    if values.size > 2:
        flat = _flat_counts(grey)
        edge = [int(v) for v in values if flat[v] < _FLAT_SHARE * count[v]]
        levels = np.array([int(v) for v in values if int(v) not in edge], np.int64)
        # Artefacts outnumber the levels they surround; a label map may hold a few thin objects among many others.
        if edge and (lossy or len(edge) >= max(2, int((levels > 0).sum()))):
            changed = int(count[edge].sum())
            if not (levels > 0).any() or changed > _MAX_SNAPPED * grey.size or levels.size > MAX_MASK_COLOURS + 1:
                raise InputError(
                    f"{what} is not a label map: {len(edge)} of its {values.size} grey values form no region "
                    f"({100 * changed / grey.size:.0f} % of the pixels), leaving {levels.size} levels, as in a photo "
                    f"or a blurred image; {_MODE_FIX}")
            # nearest level, ties to the brighter one (0/255: values >= 128 become 255, as a threshold at half)
            pos = np.clip(np.searchsorted(levels, np.arange(256)), 1, max(levels.size - 1, 1))
            lo, hi = levels[pos - 1], levels[np.minimum(pos, levels.size - 1)]
            lut = np.where(np.arange(256) - lo < hi - np.arange(256), lo, hi).astype(np.uint8)
            lut[levels] = levels
            # a lossy white is often not 255 (a heavily compressed 0/255 mask has its flat white at 253): near-white
            # levels are white, so that such a mask stays binary
            lut[lut >= 255 - _WHITE_DRIFT] = 255
            grey = lut[grey]
            levels = np.unique(lut[levels])
            logger.warning("%s looks JPEG-compressed or anti-aliased: %d grey value(s) form no region; their %d "
                           "pixels (%.2f %% of the image) now have the nearest of its levels %s (save masks "
                           "losslessly, as PNG label maps)", what, len(edge), changed, 100 * changed / grey.size,
                           levels.tolist())
            values = levels
    if values.size and values[-1] == 255 and set(values.tolist()) <= {0, 255}:
        logger.debug("%s is black/white (0/255): reading it as a binary mask (label 1)", what)
        return (grey == 255).astype(np.uint8)
    return grey


def labels_from_colours(rgb: np.ndarray, alpha: np.ndarray | None = None, *, name: str = "mask",
                        max_colours: int = MAX_MASK_COLOURS, lossy: bool = False
                        ) -> tuple[np.ndarray, list[int] | None]:
    """Label map of a colour-coded mask (what image editors and many annotation tools export).

    Rules, in this order:

    1. Black ``(0, 0, 0)`` and fully transparent pixels (``alpha == 0``) are background (0).
    2. Grey images (``R == G == B`` everywhere) are read like greyscale masks: the value is the label, a
       black/white (0/255) mask is object 1, and JPEG or anti-aliasing edges are snapped to the nearest level.
    3. If every other colour is a colour of the DAVIS/PASCAL-VOC palette, each pixel gets that colour's palette
       index (an RGB export of a DAVIS annotation keeps its labels).
    4. Otherwise the colours get ids 1, 2, ... in the order they first appear in raster order (row by row from
       the top, each row from the left).

    Args:
        rgb: ``uint8`` ``(H, W, 3)``.
        alpha: optional ``(H, W)`` alpha channel.
        name: how to call the mask in messages.
        max_colours: most distinct non-background colours accepted.
        lossy: the image comes from a lossy format (JPEG): a grey value without a flat region is always an artefact.

    Returns:
        ``(labels, palette)``: ``uint8`` ``(H, W)`` labels and a 768-int palette whose entry ``k`` is the colour of
        object ``k`` (``None`` for grey masks).

    Raises:
        InputError: more than ``max_colours`` colours (a photo or an anti-aliased image).
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    background = np.zeros(rgb.shape[:2], bool) if alpha is None else np.asarray(alpha) == 0
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        grey = np.where(background, 0, rgb[..., 0])
        return _grey_labels(grey, name, lossy), None
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    packed = np.where(background, 0, packed).ravel()
    colours, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
    objects = [i for i, c in enumerate(colours.tolist()) if c != 0]
    if len(objects) > max_colours:
        raise InputError(
            f"{name} has {len(objects)} colours (more than {max_colours}): it looks like a photo or an "
            f"anti-aliased/JPEG-compressed image rather than a mask; {_MODE_FIX}")
    lut = np.zeros(colours.size, np.uint8)
    if all(int(colours[i]) in _DAVIS_INDEX for i in objects):
        for i in objects:
            lut[i] = _DAVIS_INDEX[int(colours[i])]
        palette = list(DAVIS_PALETTE)
    else:
        palette = [0, 0, 0]
        for k, i in enumerate(sorted(objects, key=lambda j: int(first[j])), start=1):
            lut[i] = k
            c = int(colours[i])
            palette += [c >> 16, (c >> 8) & 255, c & 255]
        palette += list(DAVIS_PALETTE[len(palette):])
        logger.info("%s is a colour mask: %d object(s) numbered by first appearance (row by row), colours %s",
                    name, len(objects), [tuple(palette[3 * k:3 * k + 3]) for k in range(1, len(objects) + 1)])
    return lut[inverse].reshape(rgb.shape[:2]), palette


def _labels_from_image(im: Image.Image, what: str, lossy: bool | None = None) -> tuple[np.ndarray, list[int] | None]:
    """Labels and palette of a PIL image in any accepted mode (see :func:`read_mask`); ``lossy``: it was stored
    in a lossy format (default: its ``format`` says)."""
    lossy = im.format in _LOSSY_FORMATS if lossy is None else lossy
    mode = im.mode
    if mode == "P":
        raw = im.getpalette()
        return np.array(im, dtype=np.uint8), (_pad_palette(raw) if raw else None)
    if mode == "L":
        return _grey_labels(np.array(im, dtype=np.uint8), what, lossy), None
    if mode == "1":
        return np.array(im, dtype=bool).astype(np.uint8), None
    if mode in _COLOUR_MODES:
        rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
        return labels_from_colours(rgba[..., :3], rgba[..., 3], name=what, lossy=lossy)
    raise InputError(f"{what} is {_article(mode)} {mode} image, which rdevos does not read as a mask; {_MODE_FIX}")


def read_mask(path: PathLike, *, colour: bool = True) -> LabelMask:
    """Read a label-map PNG (or any lossless image) as a :class:`LabelMask`: the one label reader of rdevos.

    The rule for 0/255, everywhere (inference, training, the dataset runners): a greyscale mask whose only values
    are 0 and 255 is binary (255 -> object 1, as the DAVIS-2016 release); in a palette mask, index 255 is a label
    like any other (DAVIS-2017's "void" is a dataset rule, applied by :mod:`rdevos.eval.runners`).

    Accepted modes: ``'P'`` (palette indices are labels), ``'L'`` (values are labels; a mask whose only values
    are 0 and 255 is binary: label 1; JPEG or anti-aliasing artefacts, grey values that form no region between a
    few levels, are snapped to the nearest level with a warning, and an image they cannot explain, such as a
    photo, is refused), ``'1'`` (binary -> labels 0/1), and colour masks ``'RGB'``/``'RGBA'``
    (also ``'LA'``): black and fully transparent pixels are background, DAVIS-palette
    colours are their palette indices, other colours get ids 1, 2, ... in order of first appearance, row by row
    (see :func:`labels_from_colours`). An EXIF orientation is applied, as for frames (:func:`~rdevos.io.frames.upright`).

    Args:
        path: mask file.
        colour: also read colour masks (``False``: only ``'P'``/``'L'``/``'1'``, as dataset annotations are).

    Returns:
        :class:`LabelMask` with ``uint8`` ``(H, W)`` labels.

    Raises:
        InputError: missing/corrupt file, a photo-like colour image (too many colours) or another image mode.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"mask '{p}' does not exist")
    try:
        with Image.open(p) as im:
            if not colour and im.mode not in ("P", "L", "1"):
                raise InputError(f"{p}: annotation mode {im.mode!r}; expected a palette ('P') or greyscale ('L') PNG")
            im.load()
            labels, palette = _labels_from_image(upright(im), f"mask '{p}'", im.format in _LOSSY_FORMATS)
    except InputError:
        raise
    except _PIL_ERRORS as exc:
        raise InputError(f"cannot read mask '{p}' (corrupt or not an image): {exc}") from exc
    return LabelMask(np.ascontiguousarray(labels), palette)


def as_label_mask(obj: LabelMask | np.ndarray | Image.Image | PathLike) -> LabelMask:
    """Coerce a mask given as a path, PIL image, array or :class:`LabelMask`.

    Arrays are taken literally (values are labels): ``bool`` -> 0/1, integer dtypes must
    lie in 0..255, a trailing singleton channel is squeezed. PIL images are read as :func:`read_mask` reads
    files (colour masks included).

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
        labels, palette = _labels_from_image(obj, "mask image")
        return LabelMask(np.ascontiguousarray(labels), palette)
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
        The mask as a :class:`LabelMask`, resized to the frame size when it was a few pixels off
        (see :func:`fit_mask_to_frame`).

    Raises:
        InputError: size mismatch, empty mask, or too many objects.
    """
    lm = fit_mask_to_frame(as_label_mask(mask), frame_size, name=name)
    ids = lm.object_ids
    if not ids and not allow_empty:
        raise InputError(f"{name} contains no object: every pixel is 0 (background)")
    if len(ids) > max_objects:
        raise InputError(
            f"{name} has {len(ids)} distinct labels (more than {max_objects}); it looks like an "
            "anti-aliased or photographic image rather than a label map"
        )
    return lm


def _near(mask_side: int, frame_side: int) -> bool:
    return abs(mask_side - frame_side) <= max(2, round(0.01 * frame_side))


def fit_mask_to_frame(mask: LabelMask, frame_size: tuple[int, int], *, name: str = "mask") -> LabelMask:
    """The mask at the frame size: as it is, or resized when it is only a few pixels off.

    Some tools write masks a pixel or two smaller than the frames (e.g. 853x480 for 854x480 frames). A mask whose
    sides each differ from the frame's by at most 2 pixels or 1 % (whichever is more) and whose aspect ratio is
    within 1 % is resized with nearest-neighbour interpolation, with a warning; any other size is an error.

    Args:
        mask: the mask.
        frame_size: ``(height, width)`` of the frames.
        name: how to call the mask in messages.

    Returns:
        ``mask`` itself when the size matches, else a resized copy (same palette).

    Raises:
        InputError: a size that is not a few pixels off.
    """
    fh, fw = int(frame_size[0]), int(frame_size[1])
    mh, mw = mask.size
    if (mh, mw) == (fh, fw):
        return mask
    same_aspect = mh > 0 and fh > 0 and abs((mw / mh) / (fw / fh) - 1) <= 0.01
    if not (_near(mh, fh) and _near(mw, fw) and same_aspect):
        raise InputError(
            f"{name} has size {mh}x{mw} (HxW) but the frames are {fh}x{fw} (HxW); "
            "resize the mask with nearest-neighbour interpolation to the frame size"
        )
    logger.warning("%s is %dx%d (HxW), the frames %dx%d: resized to the frame size (nearest neighbour)",
                   name, mh, mw, fh, fw)
    resized = Image.fromarray(mask.labels).resize((fw, fh), Image.NEAREST)
    return LabelMask(np.asarray(resized, dtype=np.uint8).copy(), mask.palette)


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
