"""``rdevos serve``: help, the missing-extra message, argument checks, the model note."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rdevos.cli import main
from rdevos_web.jobs import RunSettings
from rdevos_web.server import model_note


def test_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--prompt-model" in capsys.readouterr().out


def test_serve_without_the_web_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve"]) == 1
    assert "pip install 'rdevos[web]'" in capsys.readouterr().err


def test_serve_rejects_a_bad_resolution(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("gradio is not installed")
    assert main(["serve", "--resolution", "huge", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--resolution" in err and "huge" in err and "Traceback" not in err


def test_model_note(tmp_path: Path, web_data: dict[str, Path]) -> None:
    assert model_note(RunSettings(model=str(web_data["ckpt"]))) == ""
    assert "does not exist" in model_note(RunSettings(model=str(tmp_path / "nope.pt")))
    assert model_note(RunSettings(model="damo/some-model")) == ""  # resolved (downloaded) by the first run
    note = model_note(RunSettings(model=None))
    assert note == "" or "embedded model" in note
