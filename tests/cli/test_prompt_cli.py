"""``rdevos mask`` and ``rdevos segment --box``: masks from prompts with the embedded prompt model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos.cli import main
from rdevos.io.masks import read_mask
from rdevos.prompt import iou
from rdevos.prompt.encoding import mask_box
from tests.conftest import SAMPLE

FRAMES = SAMPLE / "frames"
FIRST = FRAMES / "00000.jpg"
GT = read_mask(SAMPLE / "first_mask.png").labels == 1
BOX = ",".join(f"{v:g}" for v in mask_box(GT))  # type: ignore[union-attr]


def _error(capsys: pytest.CaptureFixture[str], argv: list[object], code: int) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("rdevos: error: "), err
    return lines[0]


def test_mask_from_a_box_then_add_a_second_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.png"
    assert main(["-q", "mask", str(FIRST), "--box", BOX, "-o", str(out), "--precision", "fp32"]) == 0
    assert "object 1" in capsys.readouterr().out
    im = Image.open(out)
    assert im.mode == "P" and im.size == (480, 270)
    labels = np.asarray(im)
    assert set(np.unique(labels)) == {0, 1}
    assert iou(labels == 1, GT) > 0.85
    # a second object (the rock, bottom left) from a click, merged into the same file; object 1 stays
    assert main(["-q", "mask", str(FIRST), "--point", "40,250", "--id", "2", "--add", "-o", str(out),
                 "--precision", "fp32"]) == 0
    both = np.asarray(Image.open(out))
    assert set(np.unique(both)) <= {0, 1, 2} and (both == 2).any()
    assert iou(both == 1, labels == 1) > 0.95


def test_mask_refuses_bad_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.png"
    assert "expected X0,Y0,X1,Y1" in _error(capsys, ["mask", FIRST, "--box", "1,2,3", "-o", out], 2)
    assert "X0 < X1" in _error(capsys, ["mask", FIRST, "--box", "50,2,10,30", "-o", out], 2)
    assert "only negative clicks" in _error(capsys, ["mask", FIRST, "--point", "5,5,neg", "-o", out], 2)
    assert "no prompt given" in _error(capsys, ["mask", FIRST, "-o", out], 2)
    assert "image not found" in _error(capsys, ["mask", tmp_path / "nope.jpg", "--box", BOX, "-o", out], 2)
    assert "does not exist yet" in _error(capsys, ["mask", FIRST, "--box", BOX, "--add", "-o", out], 2)
    # only known once the image is read: a box off the 480x270 frame
    assert "outside the 480x270" in _error(capsys, ["mask", FIRST, "--box", "500,10,600,50", "-o", out], 1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert "cannot read image" in _error(capsys, ["mask", bad, "--box", BOX, "-o", out], 1)
    assert not out.exists()


def test_segment_from_a_box(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["-q", "segment", str(FRAMES), "--box", BOX, "-o", str(out), "--no-progress", "--precision", "fp32"])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(list(FRAMES.glob("*.jpg")))
    assert iou(read_mask(pngs[0]).labels == 1, GT) > 0.85
    assert (read_mask(pngs[-1]).labels == 1).sum() > 0.5 * GT.sum()
    # a rerun with the same prompt resumes the same run; another prompt is another run
    assert main(["-q", "segment", str(FRAMES), "--box", BOX, "-o", str(out), "--no-progress",
                 "--precision", "fp32"]) == 0
    assert main(["-q", "segment", str(FRAMES), "--box", "0,0,100,100", "-o", str(out), "--no-progress",
                 "--precision", "fp32"]) == 2
