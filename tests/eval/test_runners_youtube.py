"""YouTube-VOS protocol of the dataset runner: all frames read, required frames written, objects entering later."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos import InputError
from rdevos.cli import main
from rdevos.config import InferenceConfig
from rdevos.eval.runners import find_layout, run_dataset
from rdevos.hub import save_checkpoint
from rdevos.model.network import RDEVOS
from tests.conftest import DAVIS_MINI, load_frames, load_mask, split_objects

SIZE = (112, 64)  # (W, H): downscaled DAVIS frames keep the tiny model fast
#: video -> (frames in the all-frames release, object id -> frame it first appears on)
VIDEOS = {"bear": (21, {1: 0, 2: 10}), "car-turn": (11, {1: 5})}
PALETTE = [0, 0, 0, 236, 95, 103, 249, 145, 87] + [0] * 759
CONFIG = InferenceConfig.preset("youtubevos").replace(resolution=None)


def _required(vid: str) -> list[str]:
    return [f"{i:05d}" for i in range(0, VIDEOS[vid][0], 5)]


def _labels(vid: str, frame: int) -> np.ndarray:
    """Objects 1 and 2 (bear: left/right half) or 1 (car-turn) on a frame."""
    n_obj = len(VIDEOS[vid][1])
    return split_objects(load_mask(vid, frame, SIZE, root=DAVIS_MINI), tuple(range(1, n_obj + 1)))


@pytest.fixture
def yt_root(tmp_path: Path, davis_mini: Path) -> Path:
    """A YouTube-VOS tree: valid/{JPEGImages (every 5th frame), Annotations, meta.json} + valid_all_frames/.

    bear: object 2 enters on frame 00010, whose PNG is exhaustive (it also holds object 1, which must be ignored
    there). car-turn: its only object enters on 00005, so the required frame 00000 precedes every annotation.
    """
    root = tmp_path / "YouTube"
    meta: dict[str, dict] = {"videos": {}}
    for vid, (n, starts) in VIDEOS.items():
        every, req, ann = (root / "valid_all_frames" / "JPEGImages" / vid, root / "valid" / "JPEGImages" / vid,
                           root / "valid" / "Annotations" / vid)
        for d in (every, req, ann):
            d.mkdir(parents=True)
        for i, f in enumerate(load_frames(vid, n, SIZE, root=davis_mini)):
            Image.fromarray(f).save(every / f"{i:05d}.jpg", quality=95)
            if i % 5 == 0:
                shutil.copy(every / f"{i:05d}.jpg", req / f"{i:05d}.jpg")
        for frame in sorted(set(starts.values())):
            lab = _labels(vid, frame)
            lab[~np.isin(lab, [o for o, s in starts.items() if s <= frame])] = 0
            im = Image.fromarray(lab)
            im.putpalette(PALETTE)
            im.save(ann / f"{frame:05d}.png")
        meta["videos"][vid] = {"objects": {str(o): {"category": "animal", "frames": [f"{i:05d}" for i in
                                                                                    range(s, n, 5)]}
                                           for o, s in starts.items()}}
    (root / "valid" / "meta.json").write_text(json.dumps(meta))
    return root


def _read(out: Path, vid: str) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / vid).glob("*.png"))}


def test_cli_all_frames_required_frames_later_object_and_zip(yt_root: Path, tmp_path: Path,
                                                            tiny_model: RDEVOS) -> None:
    lay = find_layout(yt_root, "youtubevos", "valid")
    assert lay.all_frames == yt_root / "valid_all_frames" / "JPEGImages" and lay.meta == yt_root / "valid/meta.json"
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    out, sub = tmp_path / "pred", tmp_path / "submission.zip"
    assert main(["-q", "run-dataset", "--dataset", "youtubevos", "--root", str(yt_root), "--split", "valid",
                 "-o", str(out), "--model", str(ckpt), "--device", "cpu", "--resolution", "native",
                 "--zip", str(sub), "--no-progress"]) == 0
    summary = json.loads((out / "run_summary.rank0.json").read_text())
    assert summary["frames"] == 21 + 6 and summary["written"] == 5 + 3  # all frames run, required ones written
    bear, car = _read(out, "bear"), _read(out, "car-turn")
    assert list(bear) == _required("bear") and list(car) == _required("car-turn")
    gt10 = _labels("bear", 10)
    for name, lab in bear.items():
        assert set(np.unique(lab)) <= {0, 1, 2}
        if name < "00010":
            assert 2 not in lab, name  # object 2 does not exist before its first frame
    np.testing.assert_array_equal(bear["00010"] == 2, gt10 == 2)  # ... and is there from its first frame on
    assert not np.array_equal(bear["00010"] == 1, gt10 == 1)  # object 1's pixels in 00010.png were not re-applied
    assert not car["00000"].any()  # required, before the first annotation: written empty
    np.testing.assert_array_equal(car["00005"], _labels("car-turn", 5))
    with zipfile.ZipFile(sub) as zf:
        assert sorted(zf.namelist()) == [f"Annotations/{v}/{n}.png" for v in sorted(VIDEOS) for n in _required(v)]
        with zf.open("Annotations/bear/00010.png") as fh, Image.open(fh) as im:
            assert im.mode == "P" and im.size == SIZE
            np.testing.assert_array_equal(np.asarray(im), bear["00010"])
    assert main(["-q", "run-dataset", "--dataset", "youtubevos", "--root", str(yt_root), "--split", "valid",
                 "-o", str(out), "--method", "copy-first-mask", "--eval"]) == 2  # no public ground truth

    # Without meta.json the first annotation holding a label starts it; the same results with an explicit root.
    (yt_root / "valid" / "meta.json").unlink()
    s = run_dataset(yt_root / "valid", tmp_path / "nometa", dataset="youtubevos", split="valid", model=tiny_model,
                    config=CONFIG, all_frames_root=yt_root / "valid_all_frames", progress=False)
    assert (s.frames, s.written) == (27, 8)
    for vid, ref in (("bear", bear), ("car-turn", car)):
        got = _read(tmp_path / "nometa", vid)
        assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)
    # Without the all-frames release only the required frames are segmented (and all written).
    s = run_dataset(yt_root, tmp_path / "req", dataset="youtubevos", split="valid", model=tiny_model, config=CONFIG,
                    sequences=["car-turn"], detect_all_frames=False, progress=False)
    assert (s.frames, s.written) == (2, 3) and list(_read(tmp_path / "req", "car-turn")) == _required("car-turn")


def test_youtube_layout_errors(yt_root: Path, tmp_path: Path) -> None:
    kw = dict(dataset="youtubevos", split="valid", method="copy-first-mask", progress=False)
    meta_path = yt_root / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["bear"]["objects"]["3"] = {"frames": ["00010", "00015"]}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"object\(s\) \[3\] first appear"):
        run_dataset(yt_root, tmp_path / "a", **kw)
    meta_path.write_text("{\"videos\": [1, 2]}")
    with pytest.raises(InputError, match="not a YouTube-VOS meta.json"):
        run_dataset(yt_root, tmp_path / "b", **kw)
    meta_path.unlink()
    (yt_root / "valid_all_frames" / "JPEGImages" / "bear" / "00015.jpg").unlink()
    with pytest.raises(InputError, match=r"required frame.*00015"):
        run_dataset(yt_root, tmp_path / "c", **kw)
    with pytest.raises(InputError, match="does not exist"):
        find_layout(yt_root, "youtubevos", "valid", all_frames_root=tmp_path / "nowhere")
    with pytest.raises(InputError, match="YouTube-VOS notion"):
        find_layout(yt_root, "davis2017", "valid", all_frames_root=yt_root / "valid_all_frames")
