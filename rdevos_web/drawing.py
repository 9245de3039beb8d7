"""What the editor draws with: the object colours (a distinct, named palette), overlays, brush strokes.

Object ``k`` of a job is label ``k`` in every mask file (the exported palette PNGs keep the DAVIS palette); its
colour on the page is only a display choice, stored with the job's object list and changeable by the user.
"""

from __future__ import annotations

import colorsys
import logging
import re
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from rdevos import overlay_image

logger = logging.getLogger(__name__)

__all__ = ["PALETTE", "palette_colour", "hex_to_rgb", "colour_distance", "object_palette", "overlay", "stroke_mask",
           "apply_stroke", "MIN_COLOUR_DISTANCE"]

#: Default object colours: far apart from each other and from black, each with a name shown next to its swatch.
PALETTE: list[tuple[str, str]] = [
    ("red", "#e6194b"), ("green", "#3cb44b"), ("blue", "#4363d8"), ("yellow", "#ffe119"), ("orange", "#f58231"),
    ("purple", "#911eb4"), ("cyan", "#42d4f4"), ("magenta", "#f032e6"), ("lime", "#bfef45"), ("pink", "#fabed4"),
    ("teal", "#469990"), ("brown", "#9a6324"), ("navy", "#000075"), ("mint", "#aaffc3"),
    ("maroon", "#800000"), ("white", "#ffffff"),
]
#: Two objects' colours must be at least this far apart (Euclidean RGB distance) to tell them apart.
MIN_COLOUR_DISTANCE = 60.0
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def palette_colour(index: int) -> tuple[str, str]:
    """``(name, "#rrggbb")`` of default colour ``index`` (0-based); past the palette, evenly spread hues."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    return f"colour {index + 1}", f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` (or ``rgb(r, g, b)``/``rgba(...)`` as browsers send) -> ``(r, g, b)``.

    Raises:
        ValueError: not a colour.
    """
    m = _HEX.match(colour.strip())
    if m:
        v = m.group(1)
        return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)
    nums = re.findall(r"[\d.]+", colour)
    if colour.strip().lower().startswith("rgb") and len(nums) >= 3:
        r, g, b = (max(0, min(255, round(float(x)))) for x in nums[:3])
        return r, g, b
    raise ValueError(f"{colour!r} is not a colour")


def colour_distance(a: str, b: str) -> float:
    """Euclidean distance of two colours in RGB."""
    return float(np.linalg.norm(np.subtract(hex_to_rgb(a), hex_to_rgb(b))))


def object_palette(colours: Mapping[int, str], ids: Sequence[int] = range(1, 256)) -> list[int]:
    """Flat 768-entry palette: label ``k`` of ``ids`` in ``colours[k]`` (default: palette colour ``k - 1``)."""
    palette = [0] * 768
    for obj_id in ids:
        if 0 < int(obj_id) < 256:
            r, g, b = hex_to_rgb(colours.get(int(obj_id), palette_colour(int(obj_id) - 1)[1]))
            palette[3 * int(obj_id): 3 * int(obj_id) + 3] = [r, g, b]
    return palette


def without(labels: np.ndarray, hidden: Sequence[int]) -> np.ndarray:
    """``labels`` with the objects ``hidden`` set to background (a new array only when some are)."""
    if not len(hidden):
        return labels
    return np.where(np.isin(labels, list(hidden)), 0, labels).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray | None, colours: Mapping[int, str],
            hidden: Sequence[int] = ()) -> np.ndarray:
    """The frame with each visible object blended in its colour and outlined (hidden objects are not drawn)."""
    if labels is None:
        return image
    labels = without(np.asarray(labels), hidden)
    if not labels.any():
        return image
    return overlay_image(image, labels, object_palette(colours, [int(v) for v in np.unique(labels) if v]))


def stroke_mask(shape: tuple[int, int], points: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """Pixels a round brush of ``radius`` covers along the polyline ``points`` (``(x, y)`` pixels); (H, W) bool."""
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int32)
    r = max(int(round(radius)), 1)
    if len(pts) == 0:
        return out.astype(bool)
    for x, y in pts:
        cv2.circle(out, (int(x), int(y)), r, 1, -1)
    if len(pts) > 1:
        cv2.polylines(out, [pts.reshape(-1, 1, 2)], False, 1, thickness=2 * r)
    return out.astype(bool)


def apply_stroke(base: np.ndarray | None, shape: tuple[int, int], points: Sequence[Sequence[float]], radius: float,
                 obj_id: int, *, erase: bool = False) -> np.ndarray:
    """``base`` (``None`` = all background) with a brush stroke painted as ``obj_id`` (or, ``erase``, removed).

    The eraser only removes ``obj_id`` (other objects under the stroke are kept).

    Returns:
        ``(H, W)`` uint8 labels (a new array).
    """
    out = np.zeros(shape, np.uint8) if base is None else np.array(base, np.uint8, copy=True)
    m = stroke_mask(shape, points, radius)
    if erase:
        out[m & (out == obj_id)] = 0
    else:
        out[m] = obj_id
    return out
