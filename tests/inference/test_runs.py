"""segment_to_folder / RunFolder: resume, refusal of another run and of files in the way, what --overwrite deletes,
filling in outputs, the lock, progress."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos import (InferenceConfig, RunFolder, RunFolderBusy, RunFolderError, RunProgress, VideoSession,
                    run_signature, segment_to_folder)
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


def _files(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` but rdevos's own hidden ones (relative path -> bytes)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.startswith(".rdevos-")}


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
    # PNGs rdevos did not write (no run record lists them): refused, with overwrite too, and left as they were.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "00000.png").write_bytes(b"not ours")
    (tmp_path / "b" / "holiday.png").write_bytes(b"a photo")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match=r"did not write \(00000.png, holiday.png\)") as e:
            segment_to_folder(s, tmp_path / "b", signature=_sig(s), direction="both", overwrite=overwrite)
        assert not e.value.other_run
    assert _files(tmp_path / "b") == {"00000.png": b"not ours", "holiday.png": b"a photo"}


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


def _short(model: RDEVOS, clip, n: int = 4) -> VideoSession:
    """Frames 0..n-1 of the clip, object 3 from frame 0 and object 7 from frame 2 (forward: no object 7 before)."""
    frames, mask = clip
    s = VideoSession(model, frames[:n], InferenceConfig(resolution=None, mem_every=2))
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(2, (mask == 7).astype(np.uint8), obj_ids=[7])
    return s


def test_overwrite_deletes_exactly_the_files_the_run_wrote(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _short(tiny_model, clip)
    out = tmp_path / "out"
    segment_to_folder(s, out, signature=_sig(s), save_probs=True, per_object=True)
    ours = _files(out)
    assert sorted(n for n in ours if "/" not in n) == [f"{i:05d}.png" for i in range(4)]
    assert len([n for n in ours if n.startswith("probs/")]) == 4
    assert sorted(n for n in ours if n.startswith("objects/")) == [f"objects/{i}/{f:05d}.png" for i in (3, 7)
                                                                   for f in range(4)]
    assert (np.asarray(Image.open(out / "objects" / "7" / "00000.png")) == 0).all()  # every object, every frame
    assert len(RunFolder(out).owned()) == len(ours)
    theirs = {"notes.txt": b"mine", "objects/3/extra.png": b"mine too", "sub/x.png": b"and this"}
    for rel, data in theirs.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    with pytest.raises(RunFolderError, match="different run") as e:
        segment_to_folder(s, out, signature=_sig(s, extra="other model"))
    assert e.value.other_run and _files(out) == {**ours, **theirs}
    res = segment_to_folder(s, out, signature=_sig(s, extra="other model"), overwrite=True)
    assert res.complete and res.written == 4
    after = _files(out)
    assert {k: after[k] for k in theirs} == theirs  # the user's files stay where they were
    assert sorted(set(after) - set(theirs)) == [f"{i:05d}.png" for i in range(4)]  # probs/, objects/7 gone
    assert not (out / "probs").exists() and not (out / "objects" / "7").exists()
    assert RunFolder(out).owned() == {f"{i:05d}.png" for i in range(4)}


def test_a_file_in_the_way_is_refused_before_any_work(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _short(tiny_model, clip)
    out = tmp_path / "out"
    seen: list[RunProgress] = []
    segment_to_folder(s, out, signature=_sig(s), on_frame=seen.append, should_stop=lambda: len(seen) >= 2)
    (out / "objects" / "3").mkdir(parents=True)
    (out / "objects" / "3" / "00003.png").write_bytes(b"a user's file")
    before = _files(out)
    with pytest.raises(RunFolderError, match=r"00003.png is in the way"):
        segment_to_folder(s, out, signature=_sig(s), per_object=True)
    assert _files(out) == before


def test_input_frames_in_the_output_folder_are_refused(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    frames, mask = clip
    for d, out in ((tmp_path / "frames", tmp_path / "frames"), (tmp_path / "run" / "objects" / "3", tmp_path / "run")):
        d.mkdir(parents=True)
        for i, f in enumerate(frames[:3]):
            Image.fromarray(f).save(d / f"{i:05d}.png")
        before = _files(d)
        s = VideoSession(tiny_model, d, InferenceConfig(resolution=None))
        s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
        with pytest.raises(RunFolderError, match="lies in the output folder"):
            segment_to_folder(s, out, signature=_sig(s), overwrite=True, per_object=True)
        assert _files(d) == before
    inside = tmp_path / "frames" / "masks"  # a folder inside the frames' one: nothing collides
    assert segment_to_folder(s, inside, signature=_sig(s)).written == 3


def test_new_outputs_asked_for_on_a_resume_are_filled_in(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _session(tiny_model, clip)  # both: frames 0..3 fused (no probabilities there)
    clean = tmp_path / "clean"
    segment_to_folder(s, clean, signature=_sig(s), direction="both", save_probs=True, per_object=True)
    out = tmp_path / "out"
    seen: list[RunProgress] = []
    segment_to_folder(s, out, signature=_sig(s), direction="both", on_frame=seen.append,
                      should_stop=lambda: len(seen) >= 6)
    res = segment_to_folder(s, out, signature=_sig(s), direction="both", save_probs=True, per_object=True)
    assert res.complete and res.ran and res.resumed is not None and res.restored
    assert _files(out).keys() == _files(clean).keys()
    for rel, data in _files(clean).items():
        if rel.endswith(".npz"):
            with np.load(out / rel) as a, np.load(clean / rel) as b:
                assert (a["probs"] == b["probs"]).all() and (a["object_ids"] == b["object_ids"]).all()
        else:
            assert (out / rel).read_bytes() == data, rel
    assert sorted(p.stem for p in (out / "probs").glob("*.npz")) == [f"{i:05d}" for i in range(4, 8)]
    assert segment_to_folder(s, out, signature=_sig(s), direction="both", save_probs=True,
                             per_object=True).complete_already


def test_a_run_of_an_older_rdevos_resumes_but_is_never_deleted(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _short(tiny_model, clip)
    out = tmp_path / "out"
    segment_to_folder(s, out, signature=_sig(s))
    (out / RunFolder.MANIFEST).unlink()  # as an older rdevos left it: a run record but no list of its files
    want = _bytes(out)
    (out / "00002.png").unlink()
    (out / "holiday.png").write_bytes(b"a photo")  # put there since: not the run's
    res = segment_to_folder(s, out, signature=_sig(s))  # the same run: its frames' files are its own
    assert res.restored == ["00002"] and _bytes(out) == {**want, "holiday.png": b"a photo"}
    assert RunFolder(out).owned() == set(want)
    (out / "holiday.png").unlink()
    (out / RunFolder.MANIFEST).unlink()
    with pytest.raises(RunFolderError, match="older rdevos"):
        segment_to_folder(s, out, signature=_sig(s, extra="other"), overwrite=True)
    assert _bytes(out) == want


def test_one_writer_at_a_time(tiny_model: RDEVOS, clip, tmp_path: Path) -> None:
    s = _short(tiny_model, clip, 3)
    out = tmp_path / "out"
    holder = RunFolder(out)
    with holder.locked():
        assert RunFolder(out).holder() == os.getpid()
        with pytest.raises(RunFolderBusy, match=f"in use by another rdevos run \\(process {os.getpid()}\\)"):
            segment_to_folder(s, out, signature=_sig(s))
        assert not list(out.glob("*.png"))
        with holder.locked():  # re-entrant for its owner
            pass
        assert RunFolder(out).holder() == os.getpid()
    assert RunFolder(out).holder() is None and not (out / RunFolder.LOCK).exists()
    assert segment_to_folder(s, out, signature=_sig(s)).written == 3
