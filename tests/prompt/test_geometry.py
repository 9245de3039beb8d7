"""Prompt geometry, click simulation and the GrabCut baseline (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from rdevos.errors import InputError
from rdevos.prompt import check_prompt, first_click, grabcut_mask, iou, next_click
from rdevos.prompt.encoding import mask_box, prompt_window, render_prompts, unwarp_probs, warp_image, warp_mask


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_window_grows_the_box_by_the_context() -> None:
    win = prompt_window(480, 854, (100, 50, 300, 250), context=0.25)
    assert (win.x0, win.y0, win.x1, win.y1) == (50, 0, 350, 300)
    # without a box: the whole frame, or the previous mask's box (zoom-in) with the positive clicks in it
    assert prompt_window(480, 854, None, [(10, 10, True)]) == (0, 0, 854, 480)
    prev = np.zeros((480, 854), bool)
    prev[100:200, 400:500] = True
    z = prompt_window(480, 854, None, [(600, 150, True), (10, 10, False)], prev, context=0.0)
    assert (z.x0, z.y0, z.x1, z.y1) == (400, 100, 601, 200)


def test_warp_then_unwarp_recovers_the_mask() -> None:
    mask = _disk(270, 480, 200, 120, 60)
    box = mask_box(mask)
    assert box == (140, 60, 261, 181)
    win = prompt_window(270, 480, box)
    crop = warp_mask(mask, win, 320)
    back = unwarp_probs(crop, win, 270, 480) > 0.5
    assert iou(back, mask) > 0.98
    # the image warp puts the same pixels where the mask warp puts them
    image = np.zeros((270, 480, 3), np.uint8)
    image[mask] = 255
    assert iou(warp_image(image, win, 320)[..., 0] > 127, crop > 0.5) > 0.98


def test_prompt_maps_put_box_and_clicks_where_the_warp_puts_pixels() -> None:
    h, w = 270, 480
    win = prompt_window(h, w, (100, 40, 220, 200))
    maps = render_prompts(win, 320, (100, 40, 220, 200), [(150, 100, True), (210, 45, False)])
    inside = np.zeros((h, w), np.float32)
    inside[40:200, 100:220] = 1
    assert iou(maps[0] > 0.5, warp_mask(inside, win, 320) > 0.5) > 0.97
    for ch, (x, y) in ((1, (150, 100)), (2, (210, 45))):
        dot = np.zeros((h, w), np.float32)
        dot[y, x] = 1
        peak = np.unravel_index(np.argmax(warp_mask(dot, win, 320)), (320, 320))
        assert maps[ch][peak] == 1.0
    assert maps[3].sum() == 0


def test_check_prompt_names_the_problem() -> None:
    assert check_prompt(100, 200, (-5, 10, 50, 60), [(3, 4)]) == ((0, 10, 50, 60), [(3.0, 4.0, True)])
    with pytest.raises(InputError, match="empty"):
        check_prompt(100, 200, (50, 10, 50, 60), [])
    with pytest.raises(InputError, match="outside the 200x100"):
        check_prompt(100, 200, (300, 10, 350, 60), [])
    with pytest.raises(InputError, match="click 250,4 lies outside"):
        check_prompt(100, 200, None, [(250, 4, True)])
    with pytest.raises(InputError, match="box or at least one positive click"):
        check_prompt(100, 200, None, [(20, 4, False)])
    # a minus click alone is fine when it refines a previous mask
    assert check_prompt(100, 200, None, [(20, 4, False)], has_prev=True) == (None, [(20.0, 4.0, False)])


def test_clicks_go_to_the_largest_error_interior() -> None:
    gt = np.zeros((100, 100), bool)
    gt[20:80, 20:80] = True
    assert first_click(gt) == (49.0, 49.0, True) or first_click(gt) == (50.0, 50.0, True)
    pred = gt.copy()
    pred[20:80, 50:80] = False  # missed the right half: a positive click there
    x, y, positive = next_click(pred, gt)
    assert positive and 50 <= x < 80 and 20 <= y < 80
    pred = gt.copy()
    pred[0:10, :] = True  # a background strip taken: a negative click in it
    x, y, positive = next_click(pred, gt)
    assert not positive and y < 10
    assert next_click(gt, gt) is None


def test_grabcut_baseline_separates_a_clear_object() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (120, 160, 3)).astype(np.uint8)
    obj = _disk(120, 160, 80, 60, 30)
    image[obj] = (220, 40, 40)
    mask = grabcut_mask(image, mask_box(obj))
    assert iou(mask, obj) > 0.9
