"""``VideoSession.add_prompt``: start a video from a box or clicks."""

from __future__ import annotations

import numpy as np
import pytest

from rdevos.errors import InputError
from rdevos.hub import load_model
from rdevos.inference.session import VideoSession
from rdevos.prompt import PromptPredictor, iou
from rdevos.prompt.encoding import mask_box
from tests.conftest import SAMPLE


def test_add_prompt_then_propagate(predictor: PromptPredictor, bear: tuple[np.ndarray, np.ndarray]) -> None:
    _, gt = bear
    session = VideoSession(load_model(), SAMPLE / "frames", device="cpu")
    mask = session.add_prompt(0, box=mask_box(gt), predictor=predictor)
    assert session.object_ids == [1] and iou(mask, gt) > 0.85
    # a second object (the big rock, top right) from one click gets the next id: the mask holds the click and not
    # the most salient object (the bear); more clicks refine it
    rock = session.add_prompt(0, points=[(360, 100)], predictor=predictor)
    assert session.object_ids == [1, 2] and rock[100, 360] and (rock & gt).sum() < 0.1 * rock.sum()
    refined = session.add_prompt(0, points=[(360, 100), (300, 200, False)], obj_id=2, predictor=predictor)
    assert session.object_ids == [1, 2] and refined[100, 360] and not refined[200, 300]
    frames = list(session.propagate())
    assert len(frames) == 25
    assert set(np.unique(frames[0].labels)) <= {0, 1, 2}
    assert iou(frames[-1].labels == 1, frames[0].labels == 1) > 0.3  # the bear is still tracked at the end
    with pytest.raises(InputError, match="outside the video"):
        session.add_prompt(99, box=(1, 1, 5, 5), predictor=predictor)
    with pytest.raises(InputError, match="positive click"):
        session.add_prompt(0, points=[(5, 5, False)], predictor=predictor)
