"""Bad options give one line ``rdevos: error: <what is wrong>`` and exit status 2, before any work; ``--debug``
shows the traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.cli import main
from rdevos.errors import UsageError
from tests.conftest import REPO, SAMPLE

FRAMES = SAMPLE / "frames"
MASK = SAMPLE / "first_mask.png"


def _error(capsys: pytest.CaptureFixture[str], argv: list[object], code: int = 2) -> str:
    """Run the CLI, check for exactly one error line and the exit status, return the line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("rdevos: error: "), err
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "a_file.txt"
    f.write_text("not a folder")
    return f


def _segment(*args: object) -> list[object]:
    return ["-q", "segment", FRAMES, "--mask", MASK, "--no-progress", *args]


def test_segment_output_paths_checked_before_segmenting(tmp_path: Path, a_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    line = _error(capsys, _segment("-o", a_file))
    assert "-o/--output" in line and str(a_file) in line and "existing file" in line
    for option, target, words in [
        ("--overlay", a_file / "o.mp4", "is a file"),
        ("--overlay", tmp_path, "is a folder"),
        ("--overlay", tmp_path / "o.gif", "must end in .mp4"),
        ("--gif", a_file / "sub" / "o.gif", "is a file"),
    ]:
        line = _error(capsys, _segment("-o", out, option, target))
        assert option in line and words in line, line
    assert not out.exists()  # nothing was segmented or created


@pytest.mark.parametrize("args,words", [
    (["--resolution", "abc"], "argument --resolution: must be 'native' or a short side in pixels (>= 16), got 'abc'"),
    (["--resolution", "0"], "argument --resolution: must be 'native' or a short side in pixels (>= 16), got 0"),
    (["--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
    (["--top-k", "many"], "argument --top-k: must be a whole number >= 1, got 'many'"),
    (["--mem-every", "0"], "argument --mem-every: must be >= 1, got 0"),
    (["--device", "gpu"], "argument --device: unknown device 'gpu': choose auto, cpu, cuda, cuda:N or mps"),
    (["--preset", "fast"], "argument --preset: invalid choice: 'fast'"),
])
def test_segment_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str) -> None:
    line = _error(capsys, _segment("-o", tmp_path / "out", *args))
    assert words in line and "rdevos segment --help" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_segment_cuda_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error(capsys, _segment("-o", tmp_path / "out", "--device", "cuda"))
    assert "--device cuda: CUDA is not available" in line and "--device cpu" in line


def test_segment_mask_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    empty = tmp_path / "masks"
    empty.mkdir()
    line = _error(capsys, ["segment", FRAMES, "--masks-dir", empty, "-o", out])
    assert f"--masks-dir {empty} holds no PNG file" in line and "named like the frames" in line
    assert "it is empty" in line and "no mask given" not in line
    (empty / "notes.txt").write_text("x")
    assert "it has notes.txt" in _error(capsys, ["segment", FRAMES, "--masks-dir", empty, "-o", out])
    (empty / "first.png").write_bytes(MASK.read_bytes())
    line = _error(capsys, ["segment", FRAMES, "--masks-dir", empty, "-o", out])
    assert "first.png matches no frame name" in line
    assert "nope does not exist" in _error(capsys, ["segment", FRAMES, "--masks-dir", tmp_path / "nope", "-o", out])
    assert "mask file not found" in _error(capsys, ["segment", FRAMES, "--mask", tmp_path / "m.png", "-o", out])
    assert "frame index" in _error(capsys, ["segment", FRAMES, "--mask", f"{MASK}@x", "-o", out])
    assert "no mask given" in _error(capsys, ["segment", FRAMES, "-o", out])
    assert "input not found" in _error(capsys, ["segment", tmp_path / "nope", "--mask", MASK, "-o", out])
    assert "required: -o/--output" in _error(capsys, ["segment", FRAMES, "--mask", MASK])
    # a mask file rdevos cannot read is a failure while working: status 1, still one line with the article right
    i16 = tmp_path / "i16.png"
    Image.fromarray(np.zeros((270, 480), np.uint16)).save(i16)
    assert "is an I;16 image" in _error(capsys, ["segment", FRAMES, "--mask", i16, "-o", out], code=1)


def test_careless_paths(tmp_path: Path, a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Paths that exist but are the wrong kind, or cannot be written though os.access says they can (root, /proc):
    one line naming the path, status 2, before any frame is segmented."""
    out = tmp_path / "out"
    folder = tmp_path / "masks"
    folder.mkdir()
    line = _error(capsys, ["segment", FRAMES, "--mask", folder, "-o", out])
    assert f"{folder} is a folder, not a mask file" in line and "--masks-dir" in line
    line = _error(capsys, ["mask", folder, "--box", "1,1,5,5", "-o", tmp_path / "m.png"])
    assert f"{folder} is a folder; give one frame image" in line
    if Path("/proc/self").is_dir():  # Linux: /proc takes no new files, not even root's
        line = _error(capsys, _segment("-o", out, "--overlay", "/proc/o.mp4"))
        assert line.startswith("rdevos: error: --overlay /proc/o.mp4: cannot write into /proc"), line
        assert "-o/--output /proc/x: cannot write into /proc" in _error(capsys, _segment("-o", "/proc/x"))
    assert not out.exists()
    # frames that cannot be read are a failure while working (status 1), still one line naming the input
    (tmp_path / "empty").mkdir()
    assert "contains no image files" in _error(capsys, ["segment", tmp_path / "empty", "--mask", MASK, "-o", out],
                                               code=1)
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    assert f"cannot open video '{fake}'" in _error(capsys, ["segment", fake, "--mask", MASK, "-o", out], code=1)


def test_eval_errors(tmp_path: Path, a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    (gt / "bear").mkdir(parents=True)
    pred.mkdir()
    assert "--gt " + str(tmp_path / "nope") + " does not exist" in _error(
        capsys, ["eval", "--gt", tmp_path / "nope", "--pred", pred])
    assert "is a file, not a folder" in _error(capsys, ["eval", "--gt", gt, "--pred", a_file])
    assert "existing file" in _error(capsys, ["eval", "--gt", gt, "--pred", pred, "-o", a_file])
    assert "argument --processes: must be >= 1" in _error(capsys, ["eval", "--gt", gt, "--pred", pred,
                                                                   "--processes", "0"])
    # found while working (the library's InputError): status 1, one line
    line = _error(capsys, ["eval", "--gt", gt, "--pred", pred, "--no-progress"], code=1)
    assert "missing in the predictions" in line and "'bear'" in line


def test_run_dataset_errors(tmp_path: Path, a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    base = ["run-dataset", "--root", root, "-o", tmp_path / "out"]
    assert "--root" in _error(capsys, ["run-dataset", "--root", tmp_path / "nope", "-o", tmp_path / "o"])
    assert "existing file" in _error(capsys, ["run-dataset", "--root", root, "-o", a_file])
    for args, words in [(["--shard", "2/2"], "argument --shard: must look like I/N with 0 <= I < N"),
                        (["--shard", "x"], "argument --shard: must look like I/N"),
                        (["--resolution", "0"], "argument --resolution"),
                        (["--mem-every", "0"], "argument --mem-every: must be >= 1"),
                        (["--device", "gpu"], "unknown device 'gpu'"),
                        (["--dataset", "kitti"], "argument --dataset: invalid choice"),
                        (["--zip", a_file / "s.zip"], "is a file"),
                        (["--dataset", "youtubevos", "--eval"], "YouTube-VOS validation masks are not public")]:
        assert words in _error(capsys, [*base, *args]), args
    # a folder that is not a dataset, or --sequences it lacks: a bad option, said before the model loads
    line = _error(capsys, [*base, "--no-progress"])
    assert line.startswith(f"rdevos: error: --root: {root} does not look like a davis2017 folder")
    assert "JPEGImages" in line
    davis = REPO / "tests" / "data" / "davis-mini"
    line = _error(capsys, ["run-dataset", "--dataset", "generic", "--root", davis, "-o", tmp_path / "out",
                           "--sequences", "bear", "nope"])
    assert "--sequences: 1 not in" in line and "['nope']" in line
    assert not (tmp_path / "out").exists()


def test_train_serve_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--config" in _error(capsys, ["train", "--config", tmp_path / "none.yaml"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: x\n")
    assert "KEY=VALUE" in _error(capsys, ["train", "--config", cfg, "stages.0.iterations"])
    assert "argument --max-iterations: must be >= 1" in _error(capsys, ["train", "--config", cfg,
                                                                         "--max-iterations", "0"])
    assert "contradict" in _error(capsys, ["train", "--config", cfg, "--resume-from", cfg, "--no-resume"])
    assert "argument --port: must be a port number" in _error(capsys, ["serve", "--port", "0"])
    for bad in ("huge", "8"):  # was exit 1, from inside the command, in words of its own
        line = _error(capsys, ["serve", "--resolution", bad, "--work-dir", tmp_path / "w"])
        assert "argument --resolution: must be 'native' or a short side in pixels (>= 16)" in line, line
        assert "rdevos serve --help" in line
    assert "argument --max-frames: must be >= 1" in _error(capsys, ["serve", "--max-frames", "0"])
    assert "argument --max-upload-mb: must be a number > 0" in _error(capsys, ["serve", "--max-upload-mb", "x"])
    assert "argument --top-k: must be >= 1" in _error(capsys, ["export", "--format", "onnx", "--model", "m",
                                                               "-o", tmp_path / "e", "--top-k", "0"])


def test_debug_shows_the_traceback(tmp_path: Path, a_file: Path) -> None:
    with pytest.raises(UsageError, match="existing file"):
        main([str(a) for a in ["--debug", "segment", FRAMES, "--mask", MASK, "-o", a_file]])
    with pytest.raises(UsageError, match="existing file"):
        main([str(a) for a in ["segment", FRAMES, "--mask", MASK, "-o", a_file, "--debug"]])


def test_real_process_prints_one_line_and_no_traceback(tmp_path: Path, a_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "rdevos.cli", "segment", str(FRAMES), "--mask", str(MASK), "-o", str(a_file)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("rdevos: error: -o/--output") and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" in r.stderr and "UsageError" in r.stderr


def test_help_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("segment", "eval", "run-dataset", "export", "train", "bench", "serve"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and not re.search(r"\(default[^)]*\) \(default", text), command
    assert main(["segment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, words in [("--preset", "inference settings"), ("--top-k", "memory entries"),
                          ("--mem-every", "add a frame to the memory"), ("--direction", "backward from the last"),
                          ("--no-progress", "no progress bar")]:
        assert f"{option}" in text and words in text, option
    assert main(["run-dataset", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "dataset layout and preset" in text and "which sequences" in text
    assert main(["bench", "--help"]) == 0
    assert "objects tracked" in " ".join(capsys.readouterr().out.split())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    from rdevos.hub.registry import DEFAULT_MODEL, DEFAULT_PROMPT_MODEL

    video, prompt = out.split("prompt models")
    assert [ln for ln in video.splitlines() if "(default" in ln] == [f"{DEFAULT_MODEL} (default: used when no --model "
                                                                      "/ model= is given)"]
    assert [ln for ln in prompt.splitlines() if "(default" in ln] == [f"{DEFAULT_PROMPT_MODEL} (default)"]
