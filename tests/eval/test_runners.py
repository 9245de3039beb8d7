from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos import InputError
from rdevos.cli import main
from rdevos.eval.runners import find_layout, make_submission_zip, run_dataset
from rdevos.hub import save_checkpoint
from rdevos.model.network import RDEVOS
from tests.conftest import load_frames, load_mask, split_objects

SEQS = ("bear", "car-turn", "soccerball")


@pytest.fixture
def davis_tree(tmp_path: Path, davis_mini: Path) -> Path:
    """A small DAVIS-2017-layout tree from real frames (6 frames, 120x214, 2 objects per sequence)."""
    root = tmp_path / "DAVIS"
    for seq in SEQS:
        img_dir = root / "JPEGImages" / "480p" / seq
        ann_dir = root / "Annotations" / "480p" / seq
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i, f in enumerate(load_frames(seq, 6, (214, 120), root=davis_mini)):
            Image.fromarray(f).save(img_dir / f"{i:05d}.jpg", quality=95)
            lab = Image.fromarray(split_objects(load_mask(seq, i, (214, 120), root=davis_mini)))
            lab.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            lab.save(ann_dir / f"{i:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(SEQS) + "\n")
    return root


def _read(d: Path) -> dict[str, np.ndarray]:
    return {f"{p.parent.name}/{p.name}": np.asarray(Image.open(p)) for p in sorted(d.glob("*/*.png"))}


def test_layout_and_copy_first_mask(davis_tree: Path, tmp_path: Path) -> None:
    lay = find_layout(davis_tree, "davis2017")
    assert lay.sequences == list(SEQS)
    s = run_dataset(davis_tree, tmp_path / "copy", dataset="davis2017", method="copy-first-mask", progress=False)
    assert s.done == sorted(SEQS) and s.frames == 18
    first = np.asarray(Image.open(davis_tree / "Annotations/480p/bear/00000.png"))
    for i in range(6):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"copy/bear/{i:05d}.png")), first)
    flow = run_dataset(davis_tree, tmp_path / "flow", dataset="davis2016", method="flow", progress=False)
    assert flow.frames == 18
    assert set(np.unique(np.asarray(Image.open(tmp_path / "flow/bear/00003.png")))) <= {0, 1}  # binarised


def test_model_run_resume_and_shards(davis_tree: Path, tmp_path: Path, tiny_model: RDEVOS) -> None:
    full = run_dataset(davis_tree, tmp_path / "full", model=tiny_model, progress=False)
    assert full.done == sorted(SEQS)
    # Resume: finished sequences are skipped, a half-written one is redone.
    (tmp_path / "full" / "car-turn").rename(tmp_path / "full" / ".partial-car-turn")
    (tmp_path / "full" / ".partial-car-turn" / "00005.png").unlink()
    again = run_dataset(davis_tree, tmp_path / "full", model=tiny_model, progress=False)
    assert again.done == ["car-turn"] and again.skipped == ["bear", "soccerball"]
    # Two shards into one folder give exactly the unsharded result.
    for rank in (0, 1):
        s = run_dataset(davis_tree, tmp_path / "sharded", model=tiny_model, rank=rank, world_size=2, progress=False)
        assert s.done == sorted(SEQS)[rank::2]
    a, b = _read(tmp_path / "full"), _read(tmp_path / "sharded")
    assert a.keys() == b.keys() and len(a) == 18 and all((a[k] == b[k]).all() for k in a)
    z = make_submission_zip(tmp_path / "sharded", tmp_path / "sub.zip", dataset="davis2017", sequences=SEQS)
    import zipfile

    assert len(zipfile.ZipFile(z).namelist()) == 18


def test_cli_run_dataset_with_eval(davis_tree: Path, tmp_path: Path, tiny_model: RDEVOS,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    out = tmp_path / "pred"
    assert main(["-q", "run-dataset", "--root", str(davis_tree), "-o", str(out), "--model", str(ckpt),
                 "--shard", "0/2", "--eval", "--no-progress"]) == 0
    assert "still running" in capsys.readouterr().out
    assert main(["-q", "run-dataset", "--root", str(davis_tree), "-o", str(out), "--model", str(ckpt),
                 "--shard", "1/2", "--eval", "--no-progress"]) == 0
    assert "J&F" in capsys.readouterr().out
    assert (out / "global_results-val.csv").is_file()
    assert main(["-q", "run-dataset", "--root", str(davis_tree), "-o", str(tmp_path / "b"), "--method",
                 "copy-first-mask", "--no-progress"]) == 0


def test_bad_dataset_folders(tmp_path: Path, davis_tree: Path) -> None:
    with pytest.raises(InputError, match="JPEGImages"):
        find_layout(tmp_path, "davis2017")
    (davis_tree / "ImageSets/2017/val.txt").write_text("bear\nmissing-seq\n")
    with pytest.raises(InputError, match="missing-seq"):
        find_layout(davis_tree, "davis2017")
    with pytest.raises(InputError, match="needs a model"):
        run_dataset(davis_tree, tmp_path / "x", sequences=["bear"], method="model", split="train")


def test_an_interrupted_sequence_resumes_mid_video(davis_tree: Path, tmp_path: Path, tiny_model: RDEVOS,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import rdevos.io.masks as masks_mod

    clean = run_dataset(davis_tree, tmp_path / "clean", model=tiny_model, sequences=["bear"], progress=False)
    assert clean.frames == 6
    real = masks_mod.write_mask
    count = {"n": 0}

    def killed(path, *a, **k):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 6:  # the last frame of bear: the process dies before writing it
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(masks_mod, "write_mask", killed)
    with pytest.raises(KeyboardInterrupt):
        run_dataset(davis_tree, tmp_path / "out", model=tiny_model, sequences=["bear"], progress=False)
    partial = tmp_path / "out" / ".partial-bear"
    assert len(list(partial.glob("*.png"))) == 5 and (partial / ".rdevos-resume.pt").exists()
    monkeypatch.setattr(masks_mod, "write_mask", real)
    again = run_dataset(davis_tree, tmp_path / "out", model=tiny_model, sequences=["bear"], progress=False)
    assert again.done == ["bear"] and again.frames < 6  # continued after the saved state, not redone
    a, b = _read(tmp_path / "clean"), _read(tmp_path / "out")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert sorted(p.name for p in (tmp_path / "out" / "bear").iterdir()) == [f"{i:05d}.png" for i in range(6)]


# ---------------------------------------------------------------------------------------------------- generic layout
def test_generic_gives_only_first_annotations_so_eval_scores_predictions(davis_mini: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """DAVIS-2016 has every frame annotated: the generic layout used to give every PNG as a prompt, so copying the
    "latest given mask" (like the model) reproduced the ground truth and --eval said J&F 1.000."""
    out = tmp_path / "copy"
    assert main(["-q", "run-dataset", "--dataset", "generic", "--root", str(davis_mini), "-o", str(out),
                 "--sequences", "car-turn", "soccerball", "--method", "copy-first-mask", "--eval",
                 "--no-progress"]) == 0
    assert "J&F" in capsys.readouterr().out
    first = np.asarray(Image.open(davis_mini / "Annotations/car-turn/00000.png"))
    for i in range(11):  # every frame is the first frame's mask: later annotations were not inputs
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"car-turn/{i:05d}.png")), first)
    import json

    jf = json.loads((out / "results.json").read_text())["global"]["J&F-Mean"]
    assert 0.3 < jf < 0.95  # was 1.0
    # Every annotation as a prompt is an explicit, generic-only option, and refused with --eval (exit 2, one line).
    assert main(["run-dataset", "--dataset", "generic", "--root", str(davis_mini), "-o", str(tmp_path / "all"),
                 "--sequences", "car-turn", "--method", "copy-first-mask", "--prompts", "all", "--eval"]) == 2
    err = capsys.readouterr().err
    assert "--prompts all would score 9 frame(s)" in err and "car-turn/00001.png" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "all").exists()
    s = run_dataset(davis_mini, tmp_path / "all", dataset="generic", method="copy-first-mask", prompts="all",
                    sequences=["car-turn"], progress=False)
    assert s.done == ["car-turn"]
    for i in (3, 7):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"all/car-turn/{i:05d}.png")),
                                      np.asarray(Image.open(davis_mini / f"Annotations/car-turn/{i:05d}.png")))
    assert main(["run-dataset", "--dataset", "davis2016", "--root", str(davis_mini), "-o", str(tmp_path / "d"),
                 "--prompts", "all"]) == 2
    assert "--prompts all is for --dataset generic" in capsys.readouterr().err
    with pytest.raises(InputError, match="generic datasets"):
        run_dataset(davis_mini, tmp_path / "d", dataset="davis2017", method="flow", prompts="all", progress=False)


def test_generic_object_appearing_later_is_prompted_once_and_flagged(davis_tree: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from rdevos.eval.runners import scored_prompts

    root = tmp_path / "G"
    for kind in ("JPEGImages", "Annotations"):
        (root / kind).mkdir(parents=True)
        (davis_tree / kind / "480p" / "bear").rename(root / kind / "bear")
    ann = root / "Annotations" / "bear"
    for i in range(6):  # object 1 only from frame 2 on
        im = Image.open(ann / f"{i:05d}.png")
        lab = np.asarray(im).copy()
        if i < 2:
            lab[lab == 1] = 0
        out = Image.fromarray(lab)
        out.putpalette(im.getpalette())
        out.save(ann / f"{i:05d}.png")
    # Given once each, on its first frame: object 1 on frame 2, which the evaluation counts (1 <= K = 2).
    assert scored_prompts(root, "generic") == [("bear", "00002", [1])]
    every = scored_prompts(root, "generic", prompts="all")
    assert [h[:2] for h in every] == [("bear", f"{i:05d}") for i in range(1, 5)]
    assert main(["run-dataset", "--dataset", "generic", "--root", str(root), "-o", str(tmp_path / "o"), "--method",
                 "copy-first-mask", "--eval", "--no-progress"]) == 0
    assert "1 object(s) first appear after the first frame (e.g. bear/00002.png)" in caplog.text
    given2, got2 = np.asarray(Image.open(ann / "00002.png")), np.asarray(Image.open(tmp_path / "o/bear/00002.png"))
    np.testing.assert_array_equal(got2[given2 == 1], 1)  # object 1 joins on frame 2 ...
    for i in (3, 5):  # ... and nothing is given after it
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"o/bear/{i:05d}.png")), got2)


def test_run_dataset_official_preset_wins_over_the_model_defaults(davis_tree: Path, tmp_path: Path,
                                                                   tiny_model: RDEVOS) -> None:
    """Issue 25 (6): run-dataset's "official preset" was ignored for a model with its own settings."""
    import json

    ckpt = save_checkpoint(tiny_model, tmp_path / "own.pt", inference={"resolution": 96, "top_k": 7, "mem_every": 5})
    argv = ["-q", "run-dataset", "--root", str(davis_tree), "--model", str(ckpt), "--sequences", "soccerball",
            "--no-progress"]

    def config(out: str, *more: str) -> dict:
        assert main([*argv, "-o", str(tmp_path / out), *more]) == 0
        return json.loads((tmp_path / out / "run_summary.rank0.json").read_text())["config"]

    c = config("official")
    assert (c["top_k"], c["mem_every"], c["resolution"]) == (40, 3, None)
    c = config("explicit", "--top-k", "9")
    assert (c["top_k"], c["mem_every"], c["resolution"]) == (9, 3, None)
    from rdevos.hub import load_model

    s = run_dataset(davis_tree, tmp_path / "api", model=load_model(ckpt), sequences=["bear"], progress=False)
    assert s.done == ["bear"]
    c = json.loads((tmp_path / "api" / "run_summary.rank0.json").read_text())["config"]
    assert (c["top_k"], c["mem_every"], c["resolution"]) == (40, 3, None)
