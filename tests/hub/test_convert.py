from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from rdevos import CheckpointError, ModelConfig, ModelNotFoundError, load_model, save_checkpoint, save_modelscope_dir
from rdevos.hub.convert import infer_config, load_state
from rdevos.hub.registry import resolve_weights
from rdevos.model.network import RDEVOS
from tests.conftest import TINY


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return RDEVOS(ModelConfig()).state_dict()


def test_official_pth_and_wrapped_forms(tmp_path: Path, official_sd: dict[str, torch.Tensor]) -> None:
    plain = tmp_path / "model_s012_final.pth"
    torch.save(official_sd, plain)
    ref = load_model(plain)
    assert ref.config == ModelConfig()
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in official_sd.items())
    # DDP prefix and the training-resume wrapper.
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"it": 5, "network": {f"module.{k}": v for k, v in official_sd.items()}}, wrapped)
    assert _same_weights(load_model(wrapped), ref)
    _, _, fmt = load_state(wrapped)
    assert "network" in fmt


def test_modelscope_directory(tmp_path: Path, tiny_model: RDEVOS) -> None:
    d = save_modelscope_dir(tiny_model, tmp_path / "cv_rdevos")
    assert (d / "pytorch_model.pt").is_file()
    meta = json.loads((d / "configuration.json").read_text())
    assert meta["task"] == "video-object-segmentation" and meta["framework"] == "pytorch"
    loaded = load_model(d)
    assert loaded.config == TINY and _same_weights(loaded, tiny_model)
    _, _, fmt = load_state(d)
    assert fmt == "modelscope"


def test_rdevos_format_round_trip(tmp_path: Path, tiny_model: RDEVOS) -> None:
    p = save_checkpoint(tiny_model, tmp_path / "tiny.pt", extra={"iteration": 7})
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "rdevos" and raw["config"]["key_block"] == "basic"
    assert _same_weights(load_model(p), tiny_model)


def test_legacy_small_state_dict_infers_architecture(tmp_path: Path, tiny_model: RDEVOS) -> None:
    p = tmp_path / "tiny_plain.pth"
    torch.save(tiny_model.state_dict(), p)
    assert infer_config(tiny_model.state_dict()) == TINY
    assert _same_weights(load_model(p), tiny_model)


def test_wrong_architecture_lists_keys(tmp_path: Path, tiny_model: RDEVOS) -> None:
    p = tmp_path / "tiny_plain.pth"
    sd = tiny_model.state_dict()
    sd["decoder.extra.weight"] = torch.zeros(1)
    del sd["key_comp.bias"]
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        load_model(p, config=TINY)
    msg = str(e.value)
    assert "official" in msg and "key_comp.bias" in msg and "decoder.extra.weight" in msg
    # Forcing the official architecture on a small checkpoint reports wrong shapes.
    torch.save(tiny_model.state_dict(), p)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(p, config=ModelConfig())


def test_corrupt_and_unsafe_files(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(bad)

    class Evil:
        def __reduce__(self):  # would run code under a plain torch.load
            return (print, ("pwned",))

    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(unsafe)
    notsd = tmp_path / "list.pth"
    torch.save([1, 2, 3], notsd)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_model(notsd)


def test_unresolvable_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="not a file"):
        resolve_weights(str(tmp_path / "missing.pth"))
    # A ModelScope id without the optional package installed says how to get the files.
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name: str, *a, **k):  # type: ignore[no-untyped-def]
        if name.startswith("modelscope"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(ModelNotFoundError, match="pip install 'rdevos\\[modelscope\\]'"):
        resolve_weights("damo/cv_rdevos_video-object-segmentation")


def test_checkpoint_inference_defaults(tmp_path: Path, tiny_model: RDEVOS) -> None:
    from rdevos import pipeline

    p = save_checkpoint(tiny_model, tmp_path / "lite.pt", inference={"resolution": 96, "mem_every": 3})
    loaded = load_model(p)
    assert loaded.inference_defaults == {"resolution": 96, "mem_every": 3}
    # pipeline: library defaults < the model's defaults < a preset the user names < explicit arguments.
    assert pipeline(model=p).config.resolution == 96
    named = pipeline(model=p, preset="davis2017").config
    assert (named.resolution, named.mem_every, named.top_k) == (None, 3, 40)
    assert pipeline(model=p, preset="davis2017", resolution=128).config.resolution == 128
    assert pipeline(model=p, resolution=128).config.resolution == 128
    assert pipeline(model=tiny_model).config.resolution == 480  # no defaults: the library's (ModelScope's)
    # saved again, the defaults travel with the model; bad entries are refused with the allowed keys.
    assert load_model(save_checkpoint(loaded, tmp_path / "again.pt")).inference_defaults["resolution"] == 96
    with pytest.raises(CheckpointError, match="allowed keys"):
        save_checkpoint(tiny_model, tmp_path / "bad.pt", inference={"resolutoin": 96})
    raw = torch.load(p, weights_only=True)
    raw["inference"] = {"top_k": 0}
    torch.save(raw, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="top_k"):
        load_model(tmp_path / "bad2.pt")


def test_training_weight_conversion_lives_in_hub_convert() -> None:
    import rdevos.train as train
    from rdevos.hub import convert

    assert train.load_weights is convert.load_weights and train.load_backbone is convert.load_backbone


def test_the_trainer_uses_the_library_device_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from rdevos.train import trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert trainer._resolve_device("auto").type == "mps"  # the trainer's old picker had no MPS
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert trainer._resolve_device("auto").type == "cpu"


def test_checkpoint_errors_are_one_line_without_torch_advice(tmp_path: Path, tiny_model: RDEVOS,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 25: a checkpoint with a pickled object printed torch's multi-line advice, among it to re-run with
    weights_only=False ("will likely succeed")."""
    import argparse

    from rdevos.cli import main
    from tests.conftest import SAMPLE

    with_args = tmp_path / "with_args.pth"  # what training scripts write: weights and an argparse.Namespace
    torch.save({"state_dict": tiny_model.state_dict(), "args": argparse.Namespace(lr=1e-4)}, with_args)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(with_args.read_bytes()[:4096])
    plain = tmp_path / "plain_pickle.pth"
    with open(plain, "wb") as f:
        pickle.dump({"w": [1.0, 2.0]}, f, protocol=4)
    mismatch = tmp_path / "mismatch.pth"
    sd = tiny_model.state_dict()
    del sd["key_comp.bias"]
    torch.save(sd, mismatch)
    cases = {with_args: "argparse.Namespace", truncated: "corrupt or truncated", plain: "not a file of tensors",
             mismatch: "key_comp.bias"}
    for path, words in cases.items():
        rc = main(["segment", str(SAMPLE / "frames"), "--mask", str(SAMPLE / "first_mask.png"), "--model", str(path),
                   "-o", str(tmp_path / "out"), "--no-progress"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 1, err
        assert len(lines) == 1 and lines[0].startswith("rdevos: error: ") and str(path) in lines[0], err
        assert words in lines[0], err
        assert "weights_only=False" not in err and "will likely succeed" not in err, err
