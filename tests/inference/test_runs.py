"""segment_to_folder / RunFolder: resume, refusal of another run, restoring outputs, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rdevos import (InferenceConfig, RunFolder, RunFolderError, RunProgress, VideoSession, run_signature,
                    segment_to_folder)
from rdevos.model.network import RDEVOS


def _session(model: RDEVOS, clip) -> VideoSession:
    frames, mask = clip
    s = VideoSession(model, frames, InferenceConfig(resolution=None, mem_every=2))
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(4, (mask == 7).astype(np.uint8), obj_ids=[7])  # object 7 first given later: fused frames 0..3
    return s


def _sig(s: VideoSession, **kw: object) -> str:
    return run_signature(source="clip", annotations=s.annotations(), config=s.config, direction="both", **kw)


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))}


@pytest.mark.parametrize("stop_after", [3, 10])  # in the forward pass / in the backward pass (fused frames)
def test_killed_then_resumed_gives_byte_identical_pngs(tiny_model: RDEVOS, clip, tmp_path: Path,
                                                       stop_after: int) -> None:
    s = _session(tiny_model, clip)
    clean = segment_to_folder(s, tmp_path / "clean", signature=_sig(s), direction="both")
    assert clean.complete and clean.done == clean.total == 12 and len(_bytes(tmp_path / "clean")) == 8
    seen: list[RunProgress] = []
    first = segment_to_folder(s, tmp_path / "out", signature=_sig(s), direction="both", on_frame=seen.append,
                              should_stop=lambda: len(seen) >= stop_after)
    assert first.stopped and first.done == stop_after
    assert (tmp_path / "out" / RunFolder.STATE).exists()
    rest: list[RunProgress] = []
    again = segment_to_folder(_session(tiny_model, clip), tmp_path / "out", signature=_sig(s), direction="both",
                              on_frame=rest.append)
    assert again.resumed is not None and again.frames < 12
    assert [p.done for p in rest] == sorted(p.done for p in rest) and rest[-1].done == rest[-1].total == 12
    assert rest[0].done >= stop_after  # never below what the first call reported
    assert _bytes(tmp_path / "out") == _bytes(tmp_path / "clean")
    assert not (tmp_path / "out" / RunFolder.STATE).exists()


def test_another_runs_folder_is_refused(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _session(tiny_model, clip)
    segment_to_folder(s, tmp_path / "a", signature=_sig(s), direction="both")
    with pytest.raises(RunFolderError, match="different run"):
        segment_to_folder(s, tmp_path / "a", signature=_sig(s, extra="other model"), direction="both")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "00000.png").write_bytes((tmp_path / "a" / "00000.png").read_bytes())
    with pytest.raises(RunFolderError, match="another tool"):
        segment_to_folder(s, tmp_path / "b", signature=_sig(s), direction="both")
    res = segment_to_folder(s, tmp_path / "b", signature=_sig(s), direction="both", overwrite=True)
    assert res.complete and _bytes(tmp_path / "b") == _bytes(tmp_path / "a")


def test_missing_outputs_of_a_finished_run_are_restored(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _session(tiny_model, clip)
    out = tmp_path / "out"
    segment_to_folder(s, out, signature=_sig(s), direction="both")
    want = _bytes(out)
    for name in ("00001.png", "00006.png"):  # a fused frame and a forward-only one
        (out / name).unlink()
    stamp = {n: (out / n).stat().st_mtime_ns for n in want if (out / n).exists()}
    res = segment_to_folder(s, out, signature=_sig(s), direction="both")
    assert sorted(res.restored) == ["00001", "00006"] and res.written >= 2
    assert _bytes(out) == want
    assert {n: (out / n).stat().st_mtime_ns for n in stamp} == stamp
    assert segment_to_folder(s, out, signature=_sig(s), direction="both").complete_already
