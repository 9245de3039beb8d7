"""Object colours, overlays and brush strokes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rdevos_web.drawing import (MIN_COLOUR_DISTANCE, PALETTE, apply_stroke, colour_distance, hex_to_rgb, overlay,
                                palette_colour, stroke_mask)


def test_palette_is_distinct_named_and_not_black() -> None:
    names = [n for n, _ in PALETTE]
    assert len(set(names)) == len(names)
    for (_, a), (_, b) in itertools.combinations(PALETTE, 2):
        assert colour_distance(a, b) >= MIN_COLOUR_DISTANCE, (a, b)
    assert all(colour_distance(c, "#000000") >= MIN_COLOUR_DISTANCE for _, c in PALETTE)
    assert palette_colour(0) == PALETTE[0] and palette_colour(40)[1].startswith("#")


def test_colour_parsing() -> None:
    assert hex_to_rgb("#FF8000") == (255, 128, 0) == hex_to_rgb("rgba(255, 128, 0, 1)")
    with pytest.raises(ValueError):
        hex_to_rgb("blue-ish")


def test_stroke_paints_and_the_eraser_removes_only_its_object() -> None:
    base = np.zeros((40, 60), np.uint8)
    base[:, 30:] = 2
    out = apply_stroke(base, (40, 60), [(5, 20), (50, 20)], 3, 1)
    assert out[20, 5] == 1 and out[20, 50] == 1 and out[0, 0] == 0 and out[0, 59] == 2
    assert base[20, 5] == 0  # not modified in place
    erased = apply_stroke(out, (40, 60), [(40, 20)], 5, 2, erase=True)
    assert erased[20, 50] == 1  # object 1 under the eraser of object 2 stays
    assert erased[20, 40] == 1 and erased[16, 40] == 0 and erased[10, 40] == 2
    assert stroke_mask((10, 10), [], 3).sum() == 0


def test_overlay_uses_object_colours_and_skips_hidden_objects() -> None:
    image = np.full((20, 20, 3), 128, np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    labels[2:10, 2:10] = 1
    labels[12:18, 12:18] = 2
    out = overlay(image, labels, {1: "#ff0000", 2: "#0000ff"}, hidden=[2])
    assert out[5, 5, 0] > out[5, 5, 2]  # red
    assert (out[15, 15] == 128).all()  # hidden: untouched
    assert overlay(image, None, {}) is image
