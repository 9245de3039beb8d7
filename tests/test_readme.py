"""The README's Python snippets run as written (issue 25): every ```python block of README.md, in order, in one
namespace, as a user pasting them one after another would, on the bundled sample clip.

To keep the suite fast the clip is cut to its first 4 frames (``rdevos.io.sample.sample_clip_dir`` points at a copy of
them); the snippets' code is not changed. The ONNX snippet needs the folder its bash line above writes
(``rdevos export --format onnx --model model.pth -o exported``): the test writes it with that command, for a small
random-weight model; the prompt-model snippet's folder is written by ``rdevos export --prompt-model`` of the embedded
prompt model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rdevos.io.sample
from tests.conftest import REPO, sample_frames

BLOCKS = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.S | re.M)
EXPORT = [b for b in BLOCKS if "OnnxEngine" in b]
PROMPT_EXPORT = [b for b in BLOCKS if "OnnxPromptPredictor" in b]
FRAMES = 4


def _run(code: str, ns: dict[str, Any]) -> None:
    exec(compile(code, f"README.md python block {BLOCKS.index(code) + 1}", "exec"), ns)  # noqa: S102


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The namespace after every block but the ONNX one, and the folder they ran in."""
    work = tmp_path_factory.mktemp("readme")
    clip = sample_frames(work / "sample" / "frames", FRAMES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rdevos.io.sample, "sample_clip_dir", lambda: clip)
        mp.chdir(work)
        ns: dict[str, Any] = {"__name__": "readme"}
        for code in BLOCKS:
            if code not in EXPORT and code not in PROMPT_EXPORT:
                _run(code, ns)
    return ns, work


def test_readme_has_the_snippets() -> None:
    assert len(BLOCKS) >= 7 and len(EXPORT) == 1 and len(PROMPT_EXPORT) == 1


def test_readme_python_snippets_run_as_written(readme: tuple[dict[str, Any], Path]) -> None:
    ns, work = readme
    assert ns["out"]["masks"].shape == (FRAMES, 270, 480)
    assert set(np.unique(ns["out"]["masks"])) == {0, 1} and len(ns["vis"]) == FRAMES
    assert ns["labels"].shape == (270, 480) and ns["engine"].object_ids == [1]
    assert ns["f"].labels.shape == (270, 480)  # the last propagated frame
    assert sorted(p.name for p in (work / "out").glob("*.png")) == [f"{i:05d}.png" for i in range(FRAMES)]
    assert ns["res"].frames > 0
    assert ns["sess"].object_ids == [1, 2]  # the prompt snippet's session: a box and clicks
    assert ns["mask"].shape == (270, 480) and ns["mask"].any()


def test_readme_onnx_snippet_runs_as_written(readme: tuple[dict[str, Any], Path], tiny_model: Any) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'rdevos[export]')")
    from rdevos.cli import main
    from rdevos.hub import save_checkpoint

    ns, work = readme
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        save_checkpoint(tiny_model, work / "model.pth")
        assert main(["-q", "export", "--format", "onnx", "--model", "model.pth", "-o", "exported"]) == 0
        (code,) = EXPORT
        _run(code, ns)
    assert ns["labels"].shape == (270, 480) and ns["labels"].dtype.kind in "ui"


def test_readme_prompt_export_snippet_runs_as_written(readme: tuple[dict[str, Any], Path]) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'rdevos[export]')")
    from rdevos.cli import main

    ns, work = readme
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        assert main(["-q", "export", "--format", "onnx", "--prompt-model", "rdevos-prompt-lite2",
                     "-o", "exported-prompt"]) == 0
        (code,) = PROMPT_EXPORT
        _run(code, ns)
    assert ns["mask"].shape == (270, 480) and ns["mask"].dtype == bool and ns["mask"].any()
