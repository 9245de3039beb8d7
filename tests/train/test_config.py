from __future__ import annotations

from pathlib import Path

import pytest

from rdevos.config import ModelConfig
from rdevos.errors import InputError
from rdevos.train.config import StageConfig, TrainConfig, TrainPrecision, apply_overrides, expand_path
from tests.conftest import REPO

PRESETS = ["paper-s0", "paper-s03", "paper-s2", "lite-davis"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name: str) -> None:
    cfg = TrainConfig.from_yaml(REPO / "configs" / f"{name}.yaml")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.stages and all(s.sources for s in cfg.stages)


def test_paper_presets_are_the_official_recipe() -> None:
    s0 = TrainConfig.from_yaml(REPO / "configs" / "paper-s0.yaml").stages[0]
    assert (s0.single_object, s0.num_frames, s0.batch_size, s0.lr, s0.iterations, s0.lr_steps) == \
        (True, 3, 16, 2e-5, 75000, (37500,))
    s03 = TrainConfig.from_yaml(REPO / "configs" / "paper-s03.yaml")
    assert s03.model == ModelConfig.official()
    st = s03.stages[0]
    assert (st.num_frames, st.batch_size, st.iterations, st.lr_steps, st.bootstrap_start_warm,
            st.bootstrap_end_warm, st.kl_mc, st.kl_f2, st.kl_f4) == (5, 4, 150000, (125000,), 20000, 70000, 10, 10, 10)
    assert not st.kl_detach_teacher and st.frame_weighting == "halving" and st.weight_decay == 1e-7
    assert [st.max_skip_at(i) for i in (0, 15000, 30000, 45000, 60000, 134999, 135000)] == [5, 10, 15, 20, 25, 25, 5]
    s2 = TrainConfig.from_yaml(REPO / "configs" / "paper-s2.yaml").stages[0]
    assert (s2.batch_size, s2.iterations, s2.lr_steps, s2.kl_mc, s2.kl_f2, s2.kl_f4) == (8, 75000, (62500,), 5, 5, 5)


def test_dotted_overrides() -> None:
    cfg = TrainConfig.from_yaml(REPO / "configs" / "lite-davis.yaml",
                                ["stages.0.iterations=100", "stages.0.stop_after=60", "precision=fp32",
                                 "val_sequences=[boat,hike]",
                                 "stages.0.sources.0.cache=false", "model.key_width=16", "val_every=0"])
    assert cfg.stages[0].iterations == 100 and cfg.precision is TrainPrecision.FP32
    assert cfg.val_sequences == ("boat", "hike") and not cfg.stages[0].sources[0].cache
    assert cfg.model.key_width == 16 and cfg.val_every == 0
    assert cfg.stages[0].end == 60 and cfg.stages[1].end == cfg.stages[1].iterations
    with pytest.raises(InputError, match="stop_after"):
        TrainConfig.from_yaml(REPO / "configs" / "lite-davis.yaml", ["stages.0.iterations=100"])
    with pytest.raises(InputError, match="unknown field"):
        TrainConfig.from_yaml(REPO / "configs" / "lite-davis.yaml", ["stages.0.iterationz=3"])
    with pytest.raises(InputError, match="index"):
        apply_overrides({"stages": [{}]}, ["stages.4.lr=1"])
    with pytest.raises(InputError, match="key=value"):
        apply_overrides({}, ["precision"])


def test_validation_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="num_frames"):
        StageConfig(num_frames=2, sources=({"kind": "synthetic"},))
    with pytest.raises(InputError, match="no data sources"):
        StageConfig()
    with pytest.raises(InputError, match="at least one stage"):
        TrainConfig()
    with pytest.raises(InputError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    monkeypatch.setenv("RD_X", "/data")
    monkeypatch.delenv("RD_Y", raising=False)
    assert expand_path("${RD_X}/a") == "/data/a" and expand_path("${RD_Y:-b}/c") == "b/c"
    assert expand_path("${RD_Y:-}") == ""
    with pytest.raises(InputError, match="RD_Y"):
        expand_path("$RD_Y/x")
