"""The library never imports the web app; ``rdevos serve`` finds it through the plugin hook."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest

import rdevos.cli as cli
from rdevos.cli import main
from tests.conftest import REPO


def test_the_library_does_not_import_the_web_app() -> None:
    code = ("import sys, rdevos, rdevos.cli, rdevos.eval.runners, rdevos.inference.runs; rdevos.cli.build_parser(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rdevos_web'); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_serve_is_found_by_the_plugin_hook() -> None:
    from rdevos_web.server import serve_command

    assert cli._plugin("serve", "web") is serve_command


def test_serve_without_the_web_app_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **k: [])
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rdevos_web" else real(name, *a))
    if real("gradio") is None:
        pytest.skip("gradio is not installed (the missing-gradio message is tested in tests/web)")
    assert main(["serve"]) == 1
    assert "'rdevos serve' needs the optional 'web' extra: pip install 'rdevos[web]'" in capsys.readouterr().err
