"""A few real training steps and the evaluation protocol on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rdevos.prompt import PromptConfig, PromptNet, PromptPredictor, load_prompt_model
from rdevos.prompt.training import PromptTrainConfig, evaluate, load_frames, train_prompt_net
from tests.conftest import DAVIS_MINI


def test_training_steps_write_a_loadable_checkpoint(tmp_path: Path) -> None:
    samples = load_frames(DAVIS_MINI, ["bear", "car-turn"], every=5)
    assert {s.sequence for s in samples} == {"bear", "car-turn"}
    cfg = PromptTrainConfig(iterations=3, batch_size=2, bf16=False, model=PromptConfig(crop_size=160, width=32))
    net = train_prompt_net(samples, cfg, tmp_path, imagenet=False)
    back = load_prompt_model(tmp_path / "last.pt")
    assert back.config.crop_size == 160
    for (k, a), b in zip(net.state_dict().items(), back.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), k
    # the trunk is frozen (its features are ImageNet's): only the decoder moved from the seeded init
    torch.manual_seed(cfg.seed)
    fresh = PromptNet(cfg.model)
    assert all(torch.equal(a, b) for a, b in zip(fresh.trunk.state_dict().values(), net.trunk.state_dict().values()))
    assert not torch.equal(fresh.head.weight, net.head.weight)
    res = evaluate(PromptPredictor(back), samples[:2], clicks=(1, 2))
    assert res.count == 2
    assert set(res.mean) == {"box-only", "grabcut", "box", "box+1c", "box+2c", "clicks-1c", "clicks-2c"}
    assert all(0.0 <= v <= 1.0 for v in res.mean.values())
