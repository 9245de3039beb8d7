"""Brush strokes of the image editor -> label maps (object ``k`` is painted in DAVIS palette colour ``k``).

The editor shows the frame with its current mask drawn in (as its background image) and an empty layer on top; the
user's strokes in that layer change the mask: an object colour sets that object, black (palette colour 0) sets
background. Gradio's editor keeps layers given from Python but does not draw them, so the current mask is shown in the
background image instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from rdevos import DAVIS_PALETTE

logger = logging.getLogger(__name__)

__all__ = ["MAX_OBJECTS", "object_colour", "brush_colours", "colour_names", "strokes_from_layers", "apply_strokes"]

#: Objects the brush offers (one colour each).
MAX_OBJECTS = 8
#: Pixels more transparent than this are not painted (drops the soft edge of strokes).
_MIN_ALPHA = 96
_COLOUR_NAMES = ["background (black)", "dark red", "green", "olive", "navy", "purple", "teal", "grey", "maroon"]


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of object ``obj_id`` (the DAVIS palette entry; 0 = background = black)."""
    r, g, b = DAVIS_PALETTE[3 * obj_id: 3 * obj_id + 3]
    return int(r), int(g), int(b)


def brush_colours() -> list[str]:
    """CSS colours of the brush: objects 1..MAX_OBJECTS, then background."""
    return [f"rgb{object_colour(i)}" for i in [*range(1, MAX_OBJECTS + 1), 0]]


def colour_names() -> dict[int, str]:
    """Label -> human name of its brush colour (0 = background)."""
    return {i: _COLOUR_NAMES[i] for i in range(MAX_OBJECTS + 1)}


def _as_rgba(layer: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    im = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
    im = im.convert("RGBA")
    h, w = size
    if im.size != (w, h):
        logger.debug("editor layer is %s, frame is %dx%d: resizing", im.size, w, h)
        im = im.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(im)


def strokes_from_layers(layers: Sequence[np.ndarray | Image.Image | None], size: tuple[int, int]) -> np.ndarray:
    """Read the painted pixels of the editor's layers (later layers on top).

    Each painted pixel takes the label of the nearest brush colour, so anti-aliased strokes still map to the colour
    that was picked.

    Args:
        layers: RGBA images (``(H, W, 4)`` arrays or PIL images); ``None`` entries are skipped.
        size: ``(H, W)`` of the frame.
    Returns:
        ``(H, W)`` int16: -1 = not painted, 0 = painted background, ``k`` = painted object ``k``.
    """
    h, w = size
    out = np.full((h, w), -1, np.int16)
    colours = np.asarray([object_colour(i) for i in range(MAX_OBJECTS + 1)], np.float32)
    for layer in layers:
        if layer is None:
            continue
        rgba = _as_rgba(layer, size)
        painted = rgba[..., 3] >= _MIN_ALPHA
        if not painted.any():
            continue
        rgb = rgba[painted][:, :3].astype(np.float32)
        d = ((rgb[:, None, :] - colours[None, :, :]) ** 2).sum(-1)
        out[painted] = d.argmin(1).astype(np.int16)
    return out


def apply_strokes(base: np.ndarray | None, strokes: np.ndarray) -> np.ndarray:
    """The label map ``base`` (``None`` = all background) with the painted pixels of ``strokes`` replaced.

    Args:
        base: ``(H, W)`` uint8 labels or ``None``.
        strokes: ``(H, W)`` int16 from :func:`strokes_from_layers`.
    Returns:
        ``(H, W)`` uint8 labels.
    """
    out = np.zeros(strokes.shape, np.uint8) if base is None else np.array(base, np.uint8, copy=True)
    painted = strokes >= 0
    out[painted] = strokes[painted].astype(np.uint8)
    return out
