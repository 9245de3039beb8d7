"""The prompt network and its checkpoints; the embedded model on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rdevos.errors import CheckpointError, InputError, ModelNotFoundError
from rdevos.hub.registry import DEFAULT_PROMPT_MODEL, PROMPT_REGISTRY
from rdevos.prompt import PromptConfig, PromptNet, PromptPredictor, iou, load_prompt_model, next_click, \
    save_prompt_model
from rdevos.prompt.encoding import mask_box
from tests.conftest import DAVIS_MINI


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = PromptNet(PromptConfig(width=32)).eval()
    save_prompt_model(net, tmp_path / "p.pt")
    back = load_prompt_model(tmp_path / "p.pt")
    x, p = torch.randn(1, 3, 320, 320), torch.zeros(1, 4, 320, 320)
    with torch.no_grad():
        assert torch.equal(net(x, p), back(x, p))
    assert back.config == net.config
    torch.save({"state_dict": net.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an rdevos prompt-model checkpoint"):
        load_prompt_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read prompt model"):
        load_prompt_model(tmp_path / "junk.pt")
    with pytest.raises(ModelNotFoundError, match="not a file, URL or known name"):
        load_prompt_model("no-such-model")


def test_embedded_model_is_registered_and_checked() -> None:
    spec = PROMPT_REGISTRY[DEFAULT_PROMPT_MODEL]
    assert spec.resource and spec.sha256
    net = load_prompt_model()  # resolves the packaged file and checks its sha256
    assert net.config.backbone == "efficientnet-lite2"


def test_box_gives_the_object(predictor: PromptPredictor, bear: tuple[np.ndarray, np.ndarray]) -> None:
    """The bundled clip is a training sequence: this checks the whole path (crop, model, unwarp), not accuracy."""
    image, gt = bear
    mask = predictor.predict(image, mask_box(gt))
    assert mask.shape == gt.shape and mask.dtype == bool
    assert iou(mask, gt) > 0.85
    # a box much larger than the bear still finds it, and clicks then correct the result
    loose = predictor.predict(image, (0, 0, 480, 270))
    pts = []
    prev = loose
    for _ in range(3):
        c = next_click(prev, gt)
        if c is None:
            break
        pts.append(c)
        prev = predictor.predict(image, (0, 0, 480, 270), pts, prev)
    assert iou(prev, gt) >= iou(loose, gt) - 0.02


def test_clicks_alone_and_bad_input(predictor: PromptPredictor, bear: tuple[np.ndarray, np.ndarray]) -> None:
    image, gt = bear
    ys, xs = np.nonzero(gt)
    mask = predictor.predict(image, points=[(int(np.median(xs)), int(np.median(ys)))])
    assert iou(mask, gt) > 0.6
    with pytest.raises(InputError, match="uint8 RGB"):
        predictor.predict(image[..., 0], (10, 10, 50, 50))
    with pytest.raises(InputError, match="outside"):
        predictor.predict(image, (500, 10, 600, 50))


def test_held_out_sequence_of_the_fixture(predictor: PromptPredictor) -> None:
    """soccerball is one of the 8 sequences the model never saw (214x120 frames here)."""
    from rdevos.prompt.training import load_frames

    samples = load_frames(DAVIS_MINI, ["soccerball"], min_area=20)
    scores = [iou(predictor.predict(s.image, mask_box(s.mask)), s.mask) for s in samples]
    assert len(scores) >= 3 and float(np.mean(scores)) > 0.6


def test_click_only_keeps_the_clicked_part() -> None:
    from rdevos.prompt.predictor import _keep_clicked_parts

    probs = np.zeros((40, 60), np.float32)
    probs[5:15, 5:15] = 0.9  # the part clicked on
    probs[20:35, 30:55] = 0.8  # another blob (e.g. the most salient object)
    probs[0, 59] = 0.3  # below threshold: left alone
    kept = _keep_clicked_parts(probs, [(8.0, 9.0, True), (40.0, 25.0, False)])
    assert (kept[5:15, 5:15] == 0.9).all() and not kept[20:35, 30:55].any() and kept[0, 59] == np.float32(0.3)
    both = _keep_clicked_parts(probs, [(8.0, 9.0, True), (40.0, 25.0, True)])
    assert np.array_equal(both, probs)
    missed = _keep_clicked_parts(probs, [(50.0, 5.0, True)])  # the click is on no part: nothing is dropped
    assert np.array_equal(missed, probs)
