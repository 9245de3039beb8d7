from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import rdevos.io.atomic as atomic_mod
import rdevos.io.masks as masks_mod
from rdevos.cli import main
from rdevos.hub import save_checkpoint
from rdevos.io.masks import read_mask, write_mask
from rdevos.model.network import RDEVOS
from tests.conftest import REPO, SAMPLE, sample_frames

FRAMES = SAMPLE / "frames"
MASK = SAMPLE / "first_mask.png"
N = len(list(FRAMES.glob("*.jpg")))


@pytest.fixture
def ckpt(tmp_path: Path, tiny_model: RDEVOS) -> Path:
    return save_checkpoint(tiny_model, tmp_path / "tiny.pt")


def _run(*args: object) -> int:
    return main(["-q", "segment", *map(str, args), "--no-progress", "--resolution", "native", "--precision", "fp32"])


def _pngs(d: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(d.glob("*.png"))}


def test_folder_end_to_end_with_overlay_and_extras(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "out"
    rc = _run(FRAMES, "--mask", MASK, "-o", out, "--model", ckpt, "--overlay", tmp_path / "o.mp4",
              "--gif", tmp_path / "o.gif", "--save-probs", "--per-object")
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(N)]
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.getpalette()[:6] == Image.open(MASK).getpalette()[:6]
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == N
    assert Image.open(tmp_path / "o.gif").n_frames == N
    assert len(list((out / "probs").glob("*.npz"))) == N
    assert len(list((out / "objects" / "1").glob("*.png"))) == N
    assert json.loads((out / ".rdevos-run.json").read_text())["complete"]
    assert not list(out.glob(".*.tmp"))


def test_video_input_and_backward(tmp_path: Path, ckpt: Path) -> None:
    video = tmp_path / "clip.mp4"
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(FRAMES.glob("*.jpg"))[:10]]
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    out = tmp_path / "out"
    assert _run(video, "--mask", f"{MASK}@9", "-o", out, "--model", ckpt, "--direction", "backward",
                "--overlay", tmp_path / "v.mp4") == 0
    assert [p.stem for p in sorted(out.glob("*.png"))] == [f"{i:05d}" for i in range(10)]
    with av.open(str(tmp_path / "v.mp4")) as c:
        st = c.streams.video[0]
        assert sum(1 for _ in c.decode(video=0)) == 10 and round(float(st.average_rate)) == 10


def test_resume_after_interruption_matches_clean_run(tmp_path: Path, ckpt: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clean = tmp_path / "clean"
    assert _run(FRAMES, "--mask", MASK, "-o", clean, "--model", ckpt, "--mem-every", "3") == 0
    out = tmp_path / "out"
    real = masks_mod.write_mask
    count = {"n": 0}

    def flaky(path, *a, **k):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 14:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(masks_mod, "write_mask", flaky)
    assert _run(FRAMES, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "3") == 130
    assert len(list(out.glob("*.png"))) == 13 and (out / ".rdevos-resume.pt").exists()
    monkeypatch.setattr(masks_mod, "write_mask", real)
    assert _run(FRAMES, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "3") == 0
    meta = json.loads((out / ".rdevos-run.json").read_text())
    assert meta["complete"] and meta["frames_this_run"] < N  # resumed, not restarted
    assert meta["done"] == meta["total"] == N  # the progress reaches 100 % after the resume
    a, b = _pngs(clean), _pngs(out)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # A different run into the same folder is refused; --overwrite redoes it.
    assert _run(FRAMES, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "5") == 2
    assert _run(FRAMES, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "5", "--overwrite") == 0


def test_masks_mid_video(tmp_path: Path, ckpt: Path) -> None:
    later = np.asarray(Image.open(MASK)).copy()
    later[later == 1] = 2
    p = tmp_path / "later.png"
    im = Image.fromarray(later)
    im.putpalette(Image.open(MASK).getpalette())
    im.save(p)
    out = tmp_path / "out"
    assert _run(FRAMES, "--mask", MASK, "--mask", f"{p}@10", "-o", out, "--model", ckpt) == 0
    labels = np.asarray(Image.open(out / "00010.png"))
    assert (labels[later == 2] == 2).all()


def test_bad_inputs(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path / "nope", "--mask", MASK, "-o", out, "--model", ckpt) == 2
    assert "input not found" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.open(MASK).resize((10, 10)).save(small)
    assert _run(FRAMES, "--mask", small, "-o", out, "--model", ckpt) == 1
    assert "size" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(empty, "--mask", MASK, "-o", out, "--model", ckpt) == 1
    assert "error" in capsys.readouterr().err
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert _run(fake, "--mask", MASK, "-o", out, "--model", ckpt) == 1
    assert "fake.mp4" in capsys.readouterr().err
    # A corrupt frame in the middle: a clear error naming it, and only whole PNGs before it.
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(sorted(FRAMES.glob("*.jpg"))[:6]):
        (frames / f.name).write_bytes(f.read_bytes() if i != 3 else b"garbage")
    assert _run(frames, "--mask", MASK, "-o", tmp_path / "o2", "--model", ckpt) == 1
    assert "00003.jpg" in capsys.readouterr().err
    assert sorted(p.stem for p in (tmp_path / "o2").glob("*.png")) == ["00000", "00001", "00002"]
    assert not list((tmp_path / "o2").glob(".*.tmp"))
    photo = tmp_path / "photo.png"
    Image.open(FRAMES / "00000.jpg").save(photo)
    assert _run(FRAMES, "--mask", photo, "-o", tmp_path / "o3", "--model", ckpt) == 1
    err = capsys.readouterr().err
    assert "photo.png" in err and "colours" in err and "photo" in err
    assert _run(FRAMES, "--mask", MASK, "-o", tmp_path / "o4") in (0, 1)  # embedded model or a clear error
    assert main(["segment", "--help"]) == 0


def test_model_inference_defaults_apply_unless_overridden(tmp_path: Path, tiny_model: RDEVOS) -> None:
    ckpt = save_checkpoint(tiny_model, tmp_path / "lite.pt", inference={"resolution": 96, "top_k": 7})
    args = ["-q", "segment", FRAMES, "--mask", MASK, "--model", ckpt, "--no-progress", "--precision", "fp32"]
    assert main([*map(str, args), "-o", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / ".rdevos-run.json").read_text())["settings"]
    assert settings["resolution"] == 96 and settings["top_k"] == 7
    assert main([*map(str, args), "-o", str(tmp_path / "b"), "--resolution", "64"]) == 0
    settings = json.loads((tmp_path / "b" / ".rdevos-run.json").read_text())["settings"]
    assert settings["resolution"] == 64 and settings["top_k"] == 7
    assert len(list((tmp_path / "b").glob("*.png"))) == N


@pytest.fixture
def short_clip(tmp_path: Path) -> Path:
    """The first 7 sample frames (480x270)."""
    return sample_frames(tmp_path / "frames7", 7)


def _levels(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("rdevos")]


def test_mask_a_pixel_narrower_than_the_frames_is_resized(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    # like Cutie's 'judo' example: an 853x480 mask for 854x480 frames; here 479x270 for 480x270
    narrow = tmp_path / "narrow.png"
    im = Image.open(MASK)
    small = im.resize((479, 270), Image.NEAREST)
    small.putpalette(im.getpalette())
    small.save(narrow)
    assert _run(short_clip, "--mask", narrow, "-o", tmp_path / "out", "--model", ckpt) == 0
    first = np.asarray(Image.open(tmp_path / "out" / "00000.png"))
    assert first.shape == (270, 480) and (first == np.asarray(im)).mean() > 0.99
    warnings = _levels(caplog, logging.WARNING)
    assert any("270x479" in w and "resized" in w for w in warnings), warnings
    # a real mismatch stays a clear error
    half = tmp_path / "half.png"
    im.resize((240, 135), Image.NEAREST).save(half)
    assert _run(short_clip, "--mask", half, "-o", tmp_path / "o2", "--model", ckpt) == 1


def test_objects_on_later_frames_are_info_overwrites_warn(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    first = np.asarray(Image.open(MASK))
    masks = tmp_path / "masks"
    masks.mkdir()
    write_mask(masks / "00000.png", first)  # object 1 on frame 0
    new = np.zeros_like(first)
    new[10:60, 10:80] = 2
    write_mask(masks / "00005.png", new)  # object 2 enters on frame 5
    caplog.set_level(logging.INFO)
    assert main(["segment", str(short_clip), "--masks-dir", str(masks), "-o", str(tmp_path / "a"), "--model",
                 str(ckpt), "--no-progress", "--resolution", "native", "--precision", "fp32"]) == 0
    assert _levels(caplog, logging.WARNING) == []
    assert any("object 2 first appears on frame 5" in m for m in _levels(caplog, logging.INFO))
    assert set(np.unique(np.asarray(Image.open(tmp_path / "a" / "00005.png")))) >= {2}
    # a later mask that also holds object 1 replaces its prediction there: one warning naming both
    caplog.clear()
    write_mask(masks / "00005.png", np.where(first > 0, 1, new))
    assert main(["-q", "segment", str(short_clip), "--masks-dir", str(masks), "-o", str(tmp_path / "b"),
                 "--model", str(ckpt), "--no-progress", "--resolution", "native", "--precision", "fp32"]) == 0
    warnings = _levels(caplog, logging.WARNING)
    assert len(warnings) == 1 and "00005.png (frame 5)" in warnings[0] and "[1]" in warnings[0]


def test_rgb_masks_from_editors(tmp_path: Path, ckpt: Path, short_clip: Path) -> None:
    binary = np.asarray(Image.open(MASK)) > 0
    white = tmp_path / "white.png"
    Image.fromarray(np.repeat(binary[..., None] * 255, 3, axis=2).astype(np.uint8), mode="RGB").save(white)
    assert _run(short_clip, "--mask", white, "-o", tmp_path / "w", "--model", ckpt) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w" / "00000.png")), binary.astype(np.uint8))
    # two colour-coded objects: ids by first appearance (row by row); the output palette keeps their colours
    coded = np.zeros((*binary.shape, 3), np.uint8)
    cols = np.arange(binary.shape[1])
    coded[binary & (cols < 240)] = (250, 20, 200)
    coded[binary & (cols >= 240)] = (20, 220, 90)
    path = tmp_path / "coded.png"
    Image.fromarray(coded, mode="RGB").save(path)
    want = read_mask(path)
    assert want.object_ids == [1, 2]
    assert _run(short_clip, "--mask", path, "-o", tmp_path / "c", "--model", ckpt) == 0
    out = Image.open(tmp_path / "c" / "00000.png")
    np.testing.assert_array_equal(np.asarray(out), want.labels)
    colours = {tuple(out.getpalette()[3 * k:3 * k + 3]) for k in (1, 2)}
    assert colours == {(250, 20, 200), (20, 220, 90)}


def test_a_finished_run_restores_missing_masks_and_says_so(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    for name in ("00002.png", "00005.png"):
        (out / name).unlink()
    capsys.readouterr()
    assert _run(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 0
    said = capsys.readouterr().out
    assert "restored the missing outputs of 2 frame(s)" in said and "00002" in said and "00005" in said
    after = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert after == before  # the same bytes as the first run
    untouched = {n: t for n, t in kept.items() if n not in ("00002.png", "00005.png")}
    assert {n: (out / n).stat().st_mtime_ns for n in untouched} == untouched  # the others were not rewritten
    assert _run(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 0  # now complete: nothing to do
    assert "restored" not in capsys.readouterr().out


def test_both_with_an_object_given_later_covers_every_frame(tmp_path: Path, ckpt: Path, short_clip: Path) -> None:
    first = np.asarray(Image.open(MASK))
    masks = tmp_path / "masks"
    masks.mkdir()
    write_mask(masks / "00000.png", first)
    new = np.zeros_like(first)
    new[10:60, 10:80] = 2
    write_mask(masks / "00004.png", new)
    out = tmp_path / "out"
    assert main(["-q", "segment", str(short_clip), "--masks-dir", str(masks), "-o", str(out), "--model", str(ckpt),
                 "--no-progress", "--resolution", "native", "--precision", "fp32", "--direction", "both"]) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == [f"{i:05d}" for i in range(7)]
    meta = json.loads((out / ".rdevos-run.json").read_text())
    assert meta["complete"] and meta["done"] == meta["total"] == 7 + 4


# ------------------------------------------------------------------ output folders: nothing of the user's is lost
def _seg(*args: object) -> int:
    """A quick run: the frames scaled to a short side of 64."""
    return main(["-q", "segment", *map(str, args), "--no-progress", "--resolution", "64", "--precision", "fp32"])


def _tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` but rdevos's own hidden ones."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.startswith(".rdevos-")}


def _same_outputs(a: Path, b: Path) -> None:
    ta, tb = _tree(a), _tree(b)
    assert ta.keys() == tb.keys()
    for rel in ta:
        if rel.endswith(".npz"):
            with np.load(a / rel) as x, np.load(b / rel) as y:
                assert (x["probs"] == y["probs"]).all(), rel
        else:
            assert ta[rel] == tb[rel], rel


def test_overwrite_never_deletes_frames_or_files_rdevos_did_not_write(tmp_path: Path, ckpt: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # issue 25: -o = the folder of PNG frames with --overwrite (as the error advised) deleted every frame; a folder
    # holding holiday.png and 00099.png lost both.
    frames = tmp_path / "pngs"
    frames.mkdir()
    for f in sorted(FRAMES.glob("*.jpg"))[:3]:
        Image.open(f).save(frames / f"{f.stem}.png")
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.open(FRAMES / "00005.jpg").save(mine / "holiday.png")
    write_mask(mine / "00099.png", np.asarray(Image.open(MASK)))
    before = {d: _tree(d) for d in (frames, mine)}
    for out, says in ((frames, "lies in the output folder"), (mine, "did not write (00099.png, holiday.png)")):
        for extra in ([], ["--overwrite"]):
            assert _seg(frames, "--mask", MASK, "-o", out, "--model", ckpt, *extra) == 2
            err = capsys.readouterr().err
            assert err.startswith("rdevos: error: -o") and err.count("\n") == 1 and says in err
            assert "--overwrite" not in err  # never advised where it cannot help
    assert {d: _tree(d) for d in (frames, mine)} == before


def test_outputs_that_would_land_on_the_inputs_are_refused(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # issue 25: -o = the folder of JPEG frames wrote masks among them (every later run failed); mask -o = its frame
    # replaced the frame.
    link = tmp_path / "link"
    link.symlink_to(short_clip)
    for out in (short_clip, link):
        assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 2
        assert "input frame" in capsys.readouterr().err
    out = tmp_path / "out"
    out.mkdir()
    (out / "first.png").write_bytes(MASK.read_bytes())
    assert _seg(short_clip, "--mask", out / "first.png", "-o", out, "--model", ckpt, "--overwrite") == 2
    assert f"mask {out / 'first.png'} lies in the output folder" in capsys.readouterr().err
    gif = tmp_path / "m.gif"
    gif.write_bytes(MASK.read_bytes())
    assert _seg(short_clip, "--mask", gif, "-o", tmp_path / "o2", "--model", ckpt, "--gif", gif) == 2
    assert "--gif" in capsys.readouterr().err and gif.read_bytes() == MASK.read_bytes()
    assert not list(short_clip.glob("*.png")) and _tree(out) == {"first.png": MASK.read_bytes()}

    frame = tmp_path / "f.png"
    Image.open(short_clip / "00000.jpg").save(frame)
    (tmp_path / "f-link.png").symlink_to(frame)
    data = frame.read_bytes()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for target in (frame, Path("f.png"), Path("./sub/../f.png"), tmp_path / "f-link.png"):
            (tmp_path / "sub").mkdir(exist_ok=True)
            assert main(["mask", str(frame), "--box", "10,10,100,100", "-o", str(target)]) == 2
            assert "is the input image" in capsys.readouterr().err
    finally:
        os.chdir(cwd)
    assert frame.read_bytes() == data


def test_outputs_added_on_a_resume_cover_every_frame(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 25: --per-object --save-probs added after Ctrl-C: exit 0 with objects/ and probs/ lacking the first frames
    clean = tmp_path / "clean"
    assert _seg(short_clip, "--mask", MASK, "-o", clean, "--model", ckpt, "--per-object", "--save-probs") == 0
    real, count = masks_mod.write_mask, {"n": 0}

    def interrupted(path, *a, **k):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(masks_mod, "write_mask", interrupted)
    assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 130
    monkeypatch.setattr(masks_mod, "write_mask", real)
    assert len(list(out.glob("*.png"))) == 3
    assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt, "--per-object", "--save-probs") == 0
    assert len(list((out / "objects" / "1").glob("*.png"))) == len(list((out / "probs").glob("*.npz"))) == 7
    _same_outputs(out, clean)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_is_one_line_naming_the_file_and_the_run_resumes(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _seg(short_clip, "--mask", MASK, "-o", clean, "--model", ckpt, "--mem-every", "2") == 0
    real_open = open

    def disk_full_at_frame_4(path, mode):  # type: ignore[no-untyped-def]
        full = Path(path).name.startswith(".00004.png.")  # the temporary file of 00004.png: the disk is full
        return real_open("/dev/full" if full else path, mode.replace("x", "w") if full else mode)

    monkeypatch.setattr(atomic_mod, "open", disk_full_at_frame_4, raising=False)
    capsys.readouterr()
    assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "2") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rdevos: error: No space left on device: {out / '00004.png'} (") and err.count("\n") == 1
    assert sorted(p.stem for p in out.glob("*.png")) == ["00000", "00001", "00002", "00003"]  # kept
    monkeypatch.setattr(atomic_mod, "open", real_open, raising=False)
    assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt, "--mem-every", "2") == 0
    assert json.loads((out / ".rdevos-run.json").read_text())["frames_this_run"] < 7  # resumed
    _same_outputs(out, clean)


def test_a_second_run_into_a_folder_in_use_stops_at_once(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # issue 25: two identical runs into one folder both computed everything
    out = tmp_path / "out"
    hold = ("import sys, time\nfrom rdevos.inference.runs import RunFolder\nwith RunFolder(sys.argv[1]).locked():\n"
            "    print('locked', flush=True)\n    time.sleep(300)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 1
        err = capsys.readouterr().err
        assert f"in use by another rdevos run (process {proc.pid})" in err and err.count("\n") == 1
        assert not list(out.glob("*.png"))
    finally:
        proc.kill()  # SIGKILL: the lock goes with the process, a stale lock file blocks nobody
        proc.wait()
    assert _seg(short_clip, "--mask", MASK, "-o", out, "--model", ckpt) == 0
    assert len(list(out.glob("*.png"))) == 7


@pytest.mark.parametrize(("direction", "frames"), [("forward", 4), ("backward", 4), ("both", 7)])
def test_the_summary_counts_frames(tmp_path: Path, ckpt: Path, short_clip: Path, capsys: pytest.CaptureFixture[str],
                                   direction: str, frames: int) -> None:
    # issue 25: --direction both said "wrote 29 masks" for 16 frames (fused frames are computed twice)
    out = tmp_path / "out"
    assert _seg(short_clip, "--mask", f"{MASK}@3", "-o", out, "--model", ckpt, "--direction", direction) == 0
    assert f"wrote {frames} frames to {out} in " in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == frames


def test_a_named_preset_wins_over_the_model_defaults(tmp_path: Path, tiny_model: RDEVOS, short_clip: Path) -> None:
    """Issue 25 (6): '--preset davis2017' was ignored with a model that has its own settings (the default model)."""
    ckpt = save_checkpoint(tiny_model, tmp_path / "own.pt", inference={"resolution": 96, "top_k": 7, "mem_every": 5})
    args = ["-q", "segment", short_clip, "--mask", MASK, "--model", ckpt, "--no-progress", "--precision", "fp32"]

    def settings(out: str, *more: str) -> dict:
        assert main([*map(str, args), "-o", str(tmp_path / out), *more]) == 0
        return json.loads((tmp_path / out / ".rdevos-run.json").read_text())["settings"]

    s = settings("named", "--preset", "davis2017")
    assert (s["top_k"], s["mem_every"], s["resolution"]) == (40, 3, None)
    s = settings("explicit", "--preset", "davis2017", "--mem-every", "2", "--resolution", "64")
    assert (s["top_k"], s["mem_every"], s["resolution"]) == (40, 2, 64)
    s = settings("own")  # no preset named: the model's own settings
    assert (s["top_k"], s["mem_every"], s["resolution"]) == (7, 5, 96)


def test_help_states_the_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: modelscope)" not in text  # the model's own settings are the default
    from rdevos import load_model

    d = load_model().inference_defaults
    assert (f"for the embedded model short side {d['resolution']}, top-k {d['top_k']}, every {d['mem_every']}th "
            "frame") in text



def test_flip_runs_the_mirrored_video_too_and_is_part_of_the_run(tmp_path: Path, ckpt: Path, short_clip: Path,
                                                                  tiny_model: RDEVOS) -> None:
    """--flip is InferenceConfig.flip: the CLI's masks are the library's with flip averaging (which differ from
    those without), and the setting is part of the recorded run."""
    import torch

    from rdevos import InferenceConfig, VideoSession
    from rdevos.io.frames import FolderSource

    assert _seg(short_clip, "--mask", MASK, "-o", tmp_path / "plain", "--model", ckpt, "--threads", "1") == 0
    assert _seg(short_clip, "--mask", MASK, "-o", tmp_path / "f", "--model", ckpt, "--flip", "--threads", "1") == 0
    assert json.loads((tmp_path / "f" / ".rdevos-run.json").read_text())["settings"]["flip"] is True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI's --threads 1: same bits
    try:
        s = VideoSession(tiny_model, FolderSource(short_clip), InferenceConfig(resolution=64, precision="fp32",
                                                                                 flip=True))
        s.add_mask(0, read_mask(MASK).labels)
        want = {f.name: f.labels for f in s.propagate()}
    finally:
        torch.set_num_threads(threads)
    got, plain = _pngs(tmp_path / "f"), _pngs(tmp_path / "plain")
    assert got.keys() == want.keys() == plain.keys()
    assert all(np.array_equal(got[k], want[k]) for k in got)
    assert any(not np.array_equal(got[k], plain[k]) for k in got)
    # two threads: the key encoder runs ahead in a second stage, the mirrored frame with it; the same masks
    assert _seg(short_clip, "--mask", MASK, "-o", tmp_path / "f2", "--model", ckpt, "--flip", "--threads", "2") == 0
    got2 = _pngs(tmp_path / "f2")
    assert got2.keys() == got.keys() and all(np.array_equal(got2[k], got[k]) for k in got)
