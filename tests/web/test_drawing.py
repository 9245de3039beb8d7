"""Brush strokes -> label maps."""

from __future__ import annotations

import numpy as np

from rdevos_web.drawing import MAX_OBJECTS, apply_strokes, brush_colours, object_colour, strokes_from_layers


def test_strokes_take_the_nearest_brush_colour() -> None:
    layer = np.zeros((20, 30, 4), np.uint8)
    layer[2:6, 2:6] = (*object_colour(2), 255)
    layer[10:14, 10:14] = (*[c + 9 for c in object_colour(3)], 200)  # anti-aliased / blended colour
    layer[15:18, 20:25] = (0, 0, 0, 255)  # black = background
    layer[0, 29] = (*object_colour(1), 40)  # faint stroke edge: ignored
    strokes = strokes_from_layers([layer, None], (20, 30))
    assert (strokes[2:6, 2:6] == 2).all() and (strokes[10:14, 10:14] == 3).all()
    assert (strokes[15:18, 20:25] == 0).all() and strokes[0, 29] == -1
    base = np.ones((20, 30), np.uint8)
    out = apply_strokes(base, strokes)
    assert out.dtype == np.uint8 and (out[15:18, 20:25] == 0).all() and out[0, 0] == 1 and (out[2:6, 2:6] == 2).all()
    assert (apply_strokes(None, strokes)[0, 0] == 0) and base[2, 2] == 1  # base not modified


def test_layers_of_another_size_are_resized_and_later_layers_win() -> None:
    a = np.zeros((10, 15, 4), np.uint8)
    a[...] = (*object_colour(1), 255)
    b = np.zeros((20, 30, 4), np.uint8)
    b[:10] = (*object_colour(4), 255)
    strokes = strokes_from_layers([a, b], (20, 30))
    assert (strokes[:10] == 4).all() and (strokes[10:] == 1).all()


def test_brush_colours_are_the_davis_palette() -> None:
    cols = brush_colours()
    assert len(cols) == MAX_OBJECTS + 1 and cols[0] == "rgb(128, 0, 0)" and cols[-1] == "rgb(0, 0, 0)"
