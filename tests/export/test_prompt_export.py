"""The shipped prompt model (rdevos-prompt-lite2) exported with ``rdevos export --prompt-model`` gives PromptPredictor's
masks at three frame sizes, through onnxruntime (also in a process without torch) and TorchScript."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos import InputError
from rdevos.cli import main
from rdevos.io.masks import read_mask
from rdevos.prompt import ObjectPrompt, load_prompt_predictor, prompts_to_labels
from rdevos.prompt.encoding import mask_box
from tests.conftest import SAMPLE
from tests.export.conftest import onnxruntime_or_skip

#: Frame sizes (W, H): the sample's 480x270 scaled up, down and to an odd size. The graph sees a 320x320 crop of the
#: prompt's window in each (it was traced on a 96x128 crop).
SIZES = [(640, 360), (333, 187), (1280, 720)]


@pytest.fixture(scope="module")
def prompt_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both formats of the embedded prompt model, exported with the CLI as a user does."""
    out: dict[str, Path] = {}
    for fmt in ("onnx", "torchscript"):
        folder = tmp_path_factory.mktemp(f"prompt-{fmt}")
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            rc = main(["-q", "export", "--format", fmt, "--prompt-model", "rdevos-prompt-lite2", "-o", str(folder)])
        assert rc == 0, fmt
        if fmt == "onnx" and "NOT checked" in stdout.getvalue():
            pytest.skip("onnxruntime not installed (pip install 'rdevos[export]')")
        assert "checked against PyTorch at 96x128 and 320x320" in stdout.getvalue()
        out[fmt] = folder
    return out


def _frame(size: tuple[int, int], index: int = 3) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(SAMPLE / "frames" / f"{index:05d}.jpg").convert("RGB").resize(size, Image.BILINEAR))
    gt = np.asarray(Image.fromarray((read_mask(SAMPLE / "first_mask.png").labels > 0).astype(np.uint8))
                    .resize(size, Image.NEAREST)) > 0
    return image, gt


def _prompts(gt: np.ndarray) -> list[dict[str, object]]:
    """A box, a click alone, and a box with a negative click refining a previous mask (all four prompt channels)."""
    x0, y0, x1, y1 = mask_box(gt)  # type: ignore[misc]
    ys, xs = np.nonzero(gt)
    inside = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]), True)
    h, w = gt.shape
    outside = (min(x1 + 2, w - 1.0), float(y0), False)
    return [{"box": (x0, y0, x1, y1)}, {"points": [inside]},
            {"box": (x0, y0, x1, y1), "points": [outside], "prev_mask": gt}]


@pytest.fixture(scope="module")
def reference() -> dict[tuple[int, int], list[np.ndarray]]:
    """PromptPredictor's (fp32 PyTorch) masks for each size and prompt, computed once for both formats."""
    ref = load_prompt_predictor(device="cpu", precision="fp32")
    out = {}
    for size in SIZES:
        image, gt = _frame(size)
        out[size] = [ref.predict(image, **prompt) for prompt in _prompts(gt)]  # type: ignore[arg-type]
    return out


def _predictor(fmt: str, folder: Path):  # noqa: ANN202
    from rdevos.export import OnnxPromptPredictor, TorchScriptPromptPredictor

    return OnnxPromptPredictor(folder, threads=1) if fmt == "onnx" else TorchScriptPromptPredictor(folder)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_prompt_export_matches_pytorch_at_three_frame_sizes(fmt: str, prompt_exports: dict[str, Path],
                                                            reference: dict[tuple[int, int], list[np.ndarray]]
                                                            ) -> None:
    if fmt == "onnx":
        onnxruntime_or_skip()
    folder = prompt_exports[fmt]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["format"] == "rdevos-prompt-export" and m["backend"] == fmt and m["prompt_config"]["crop_size"] == 320
    assert m["graphs"]["prompt"]["inputs"][0]["shape"] == [1, 3, "H", "W"]
    assert max(m["verification_max_rel_diff"].values()) < 1e-3
    got_pred = _predictor(fmt, folder)
    for size in SIZES:
        image, gt = _frame(size)
        for prompt, a in zip(_prompts(gt), reference[size]):
            b = got_pred.predict(image, **prompt)  # type: ignore[arg-type]
            assert b.shape == a.shape == gt.shape and b.dtype == np.bool_
            assert (a == b).mean() >= 0.999, (size, prompt.keys(), (a == b).mean())
            inter, union = (b & gt).sum(), (b | gt).sum()
            assert inter / union > 0.5, (size, prompt.keys())  # a real mask of the bear, not an empty one
    # the exported predictor works where a PromptPredictor does: prompts -> a label map
    image, gt = _frame(SIZES[0])
    labels = prompts_to_labels(got_pred, image, {3: ObjectPrompt(box=mask_box(gt))})  # type: ignore[arg-type]
    assert set(np.unique(labels)) == {0, 3} and ((labels == 3) == reference[SIZES[0]][0]).mean() >= 0.999


def test_prompt_errors_are_the_predictors(prompt_exports: dict[str, Path]) -> None:
    """Bad prompts get PromptPredictor's one-line errors; a prompt export is not a video engine and vice versa."""
    onnxruntime_or_skip()
    from rdevos.export import OnnxEngine, OnnxPromptPredictor

    pred = OnnxPromptPredictor(prompt_exports["onnx"])
    image, _ = _frame(SIZES[1])
    with pytest.raises(InputError, match="lies outside the 333x187"):
        pred.predict(image, (400, 10, 500, 50))
    with pytest.raises(InputError, match="needs a box or at least one positive click"):
        pred.predict(image)
    with pytest.raises(InputError, match=r"uint8 RGB array"):
        pred.predict(image[..., 0], (10, 10, 50, 50))
    with pytest.raises(InputError, match="prompt-model export .* load it with OnnxPromptPredictor"):
        OnnxEngine(prompt_exports["onnx"])
    with pytest.raises(InputError, match="torchscript export, not onnx; load it with .*TorchScriptPromptPredictor"):
        OnnxPromptPredictor(prompt_exports["torchscript"])


def test_video_export_is_not_a_prompt_model(onnx_export: Path) -> None:
    from rdevos.export import OnnxPromptPredictor

    with pytest.raises(InputError, match="video-model export, not a prompt model; load it with OnnxEngine"):
        OnnxPromptPredictor(onnx_export)


_CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    export_dir, data = sys.argv[1:3]
    sys.path.insert(0, export_dir)
    import numpy as np
    from rdevos_runtime import OnnxPromptPredictor  # the runtime copy written next to the graph
    clip = np.load(data)
    pred = OnnxPromptPredictor(export_dir, threads=1)
    np.save(data + ".mask.npy", pred.predict(clip["image"], [float(v) for v in clip["box"]]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "rdevos") and sys.modules[m] is not None)
    print(json.dumps(loaded))
""")


def test_prompt_export_runs_without_torch(tmp_path: Path, prompt_exports: dict[str, Path]) -> None:
    onnxruntime_or_skip()
    folder = prompt_exports["onnx"]
    image, gt = _frame(SIZES[1])
    box = mask_box(gt)
    data = tmp_path / "frame.npz"
    np.savez(data, image=image, box=np.asarray(box))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(data)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    got = np.load(str(data) + ".mask.npy")
    ref = load_prompt_predictor(device="cpu", precision="fp32").predict(image, box)
    assert got.shape == ref.shape and (got == ref).mean() >= 0.999 and got.sum() > 1000
