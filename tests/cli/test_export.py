"""`rdevos export`: writes the graphs and the manifest; bad arguments are usage errors or clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rdevos.cli import main
from rdevos.hub import save_checkpoint
from rdevos.model.network import RDEVOS


@pytest.fixture
def ckpt(tmp_path: Path, tiny_model: RDEVOS) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.pt")


@pytest.mark.parametrize("fmt,ext", [("onnx", "onnx"), ("torchscript", "pt")])
def test_export_writes_graphs_and_manifest(tmp_path: Path, ckpt: Path, fmt: str, ext: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'rdevos[export]')")
    out = tmp_path / "out"
    rc = main(["-q", "export", "--format", fmt, "--model", str(ckpt), "-o", str(out), "--objects", "2",
               "--preset", "davis2017", "--mem-every", "5"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["backend"] == fmt and m["objects"] == 2 and m["precision"] == "fp32"
    assert m["inference"]["top_k"] == 40 and m["inference"]["mem_every"] == 5 and m["inference"]["resolution"] is None
    for g in m["graphs"].values():
        assert g["file"].endswith("." + ext) and (out / g["file"]).is_file()


def test_export_errors(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["-q", "export", "--model", str(ckpt), "-o", str(tmp_path / "o")]
    assert main([*base, "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main([*base, "--format", "torchscript", "--objects", "many"]) == 2
    assert "positive number or 'dynamic'" in capsys.readouterr().err
    assert main([*base, "--format", "torchscript", "--objects", "0"]) == 2
    assert "positive number or 'dynamic', got '0'" in capsys.readouterr().err
    assert main([*base, "--format", "torchscript", "--opset", "17"]) == 2
    assert "ONNX exports only" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["-q", "export", "--format", "onnx", "--model", str(ckpt), "-o", str(tmp_path / "file")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert main(["-q", "export", "--format", "onnx", "--model", str(tmp_path / "none.pt"), "-o", "x"]) == 1
    assert "none.pt' is not a file" in capsys.readouterr().err


def test_export_that_fails_its_self_check_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph that froze the traced frame size (the SAME-padding bug, injected) is reported on one line, exit 1."""
    from tests.conftest import sane_init_
    from tests.export.test_self_check import LITE0, _shape_freezing_pad

    from rdevos.model.backbones import SameConv2d

    ckpt = save_checkpoint(sane_init_(RDEVOS(LITE0), seed=2).eval(), tmp_path / "lite0.pt")
    monkeypatch.setattr(SameConv2d, "_pad", _shape_freezing_pad)
    out = tmp_path / "out"
    assert main(["-q", "export", "--format", "torchscript", "--model", str(ckpt), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "wrote" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rdevos: error: export self-check failed: graph 'key_encoder' on a 80x112 frame")
    assert not (out / "manifest.json").exists()


def test_prompt_model_export_options(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["-q", "export", "--format", "onnx", "-o", str(tmp_path / "o")]
    assert main([*base, "--prompt-model", "rdevos-prompt-lite2", "--top-k", "3", "--objects", "2"]) == 2
    assert "--objects, --top-k are for video models (--model); a prompt model has none" in capsys.readouterr().err
    assert main([*base, "--prompt-model", "rdevos-prompt-lite2", "--model", str(ckpt)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(base) == 2
    assert "one of the arguments --model --prompt-model is required" in capsys.readouterr().err
    assert main([*base, "--prompt-model", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
