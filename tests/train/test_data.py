from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.errors import InputError
from rdevos.train.config import TrainConfig
from rdevos.train.data import (ClipSampler, StaticPseudoVideoDataset, SyntheticVideoDataset, VOSClipDataset,
                               perturb_mask, sample_frame_indices)
from rdevos.train.trainer import _val_exclusions, build_stage_dataset
from tests.conftest import DAVIS16, REPO, load_mask

HELD_OUT = ["boat", "dog-agility", "hike", "motorbike", "tennis"]


def _fake_davis(root: Path, seqs: dict[str, int], size: tuple[int, int] = (48, 40), empty: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for name, n in seqs.items():
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
                root / "JPEGImages" / name / f"{i:05d}.jpg")
            m = np.zeros((size[1], size[0]), np.uint8)
            if not empty:
                m[8:32, 4 + i:20 + i] = 1
                m[8:32, 28:44] = 2
            im = Image.fromarray(m, mode="P")
            im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
            im.save(root / "Annotations" / name / f"{i:05d}.png")
    return root


def test_clip_shapes_dtypes_objects_and_determinism(davis16: Path) -> None:
    ds = VOSClipDataset(davis16, sequences=["bear", "blackswan"] if (davis16 / "JPEGImages/blackswan").is_dir()
                        else ["bear", "car-turn"], num_frames=5, crop_size=64, max_objects=2)
    s = ds[(0, 123, 5)]
    assert s["rgb"].shape == (5, 3, 64, 64) and s["rgb"].dtype == torch.float32
    assert s["gt"].shape == (5, 2, 64, 64) and s["cls_gt"].shape == (5, 64, 64) and s["cls_gt"].dtype == torch.int64
    assert s["pgt"].shape == (2, 64, 64) and s["selector"].tolist() == [1.0, 0.0]  # DAVIS-2016: one object
    assert torch.equal(s["cls_gt"] == 1, s["gt"][:, 0] > 0.5) and not s["gt"][:, 1].any()
    assert s["gt"][0, 0].sum() > 0  # frame 0 shows the object
    again = ds[(0, 123, 5)]
    assert all(torch.equal(s[k], again[k]) for k in ("rgb", "gt", "cls_gt", "pgt"))
    frames = [ds[(0, seed, 3)]["info"]["frames"] for seed in range(12)]
    for f in frames:
        gaps = (f[1:] - f[:-1]).abs()
        assert len(set(f.tolist())) == 5 and gaps.max() <= 3 * 4  # each new frame within 3 of a chosen one
    assert any(bool((f[1:] < f[:-1]).all()) for f in frames)  # some clips are time-reversed


def test_two_objects_selector_and_copy_paste(tmp_path: Path) -> None:
    root = _fake_davis(tmp_path / "d", {"a": 6, "b": 6})
    ds = VOSClipDataset(root, num_frames=3, crop_size=32, max_objects=2, reverse_prob=0.0, augment=False)
    s = ds[(0, 5, 2)]
    assert s["selector"].tolist() == [1.0, 1.0]
    assert set(s["cls_gt"].unique().tolist()) <= {0, 1, 2} and (s["cls_gt"] == 2).any()
    single = VOSClipDataset(root, num_frames=3, crop_size=32, max_objects=1)[(1, 5, 2)]
    assert single["gt"].shape[1] == 1 and single["selector"].tolist() == [1.0]
    cp = VOSClipDataset(root, num_frames=3, crop_size=32, max_objects=2, copy_paste_prob=1.0)
    assert cp[(0, 9, 2)]["selector"].tolist() == [1.0, 1.0]


def test_frame_sampling_respects_max_skip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_frame_indices(rng, 40, 5, 2)
        assert idx == sorted(idx) and len(set(idx)) == 5 and max(np.diff(idx)) <= 2
    with pytest.raises(ValueError):
        sample_frame_indices(rng, 3, 5, 2)


def test_perturbed_mask_iou_in_range(davis16: Path) -> None:
    mask = load_mask("bear", 0, (214, 120))
    rng = np.random.default_rng(0)
    for _ in range(20):
        target = rng.uniform(0.85, 1.0)
        out = perturb_mask(mask, target, rng)
        gt = mask > 0
        iou = np.count_nonzero(out.astype(bool) & gt) / np.count_nonzero(out.astype(bool) | gt)
        assert 0.8 <= iou < target
    assert not perturb_mask(np.zeros((8, 8), np.uint8), 0.9, rng).any()


def test_held_out_sequences_never_trained_on() -> None:
    if not DAVIS16.is_dir():
        pytest.skip("no DAVIS data")
    names = (DAVIS16 / "train.txt").read_text().split()
    assert all(s in names for s in HELD_OUT)
    cfg = TrainConfig.from_yaml(REPO / "configs" / "lite-davis.yaml")
    assert list(cfg.val_sequences) == HELD_OUT
    if not DAVIS16.is_dir():
        pytest.skip("no DAVIS data")
    # Even with the sources' own exclude lists removed, the validation sequences are excluded automatically.
    stage = cfg.stages[0]
    import dataclasses
    srcs = tuple(dataclasses.replace(s, exclude=(), cache=False) for s in stage.sources)
    stage = dataclasses.replace(stage, sources=srcs)
    mixed, weights = build_stage_dataset(stage, extra_exclude=_val_exclusions(cfg))
    video, static = mixed.datasets
    assert len(video.names) == 25 and not set(video.names) & set(HELD_OUT)
    assert not any(p[0].parent.name in HELD_OUT for p in static.pairs)
    assert weights == [30, 0.7]


def test_bad_folders_raise_or_count(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        VOSClipDataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="JPEGImages"):
        VOSClipDataset(tmp_path / "flat")
    root = _fake_davis(tmp_path / "d", {"good": 6, "nomask": 6, "short": 2, "mism": 6})
    _fake_davis(tmp_path / "e", {"empty": 6}, empty=True)
    import shutil
    shutil.copytree(tmp_path / "e" / "JPEGImages" / "empty", root / "JPEGImages" / "empty")
    shutil.copytree(tmp_path / "e" / "Annotations" / "empty", root / "Annotations" / "empty")
    shutil.rmtree(root / "Annotations" / "nomask")
    (root / "Annotations" / "good" / "00005.png").unlink()  # a frame without annotation
    for i in range(6):  # masks of another size than their frames
        Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(root / "Annotations" / "mism" / f"{i:05d}.png")
    ds = VOSClipDataset(root, num_frames=3, crop_size=32)
    assert ds.names == ["good"]
    sk = ds.report.skipped
    assert sk["missing_masks"] == 1 and sk["unannotated_frames"] == 1 and sk["too_short"] == 1
    assert sk["size_mismatch_frames"] == 6 and sk["empty_sequences"] == 1
    with pytest.raises(InputError, match="not found"):
        VOSClipDataset(root, sequences=["good", "missing"])
    with pytest.raises(InputError, match="no usable sequence"):
        VOSClipDataset(root, sequences=["empty"])


def test_static_pseudo_video(davis16: Path) -> None:
    ds = StaticPseudoVideoDataset(davis16, sequences=["bear"], frame_stride=20, num_frames=3, crop_size=64)
    s = ds[(0, 3, 5)]
    assert s["rgb"].shape == (3, 3, 64, 64) and s["gt"].shape == (3, 1, 64, 64)
    assert 0 <= float(s["gt"].min()) and float(s["gt"].max()) <= 1
    assert torch.equal(s["cls_gt"] == 1, s["gt"][:, 0] > 0.5)
    assert not torch.equal(s["rgb"][0], s["rgb"][1])  # frames are warped differently


def test_synthetic_is_deterministic_and_has_objects() -> None:
    ds = SyntheticVideoDataset(8, num_frames=5, crop_size=64, max_objects=2, seed=3)
    a, b = ds[2], ds[(2, 999, 7)]
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["cls_gt"], b["cls_gt"])
    assert a["rgb"].shape == (5, 3, 64, 64) and a["gt"][0, 0].sum() > 0
    counts = [int(ds[i]["selector"].sum()) for i in range(8)]
    assert 2 in counts  # some videos have two target objects


def test_sampler_is_sharded_deterministic_and_resumable() -> None:
    kw = dict(batch_size=3, iterations=10, seed=7)
    r0 = ClipSampler([10, 4], [2, 0.5], rank=0, world_size=2, **kw)
    r1 = ClipSampler([10, 4], [2, 0.5], rank=1, world_size=2, **kw)
    assert r0.per_rank == 11  # (2 x 10 + 2) / 2
    e0, e1 = r0.epoch_order(0), r1.epoch_order(0)
    assert len(e0) == len(e1) == 11
    # together the ranks cover the epoch: source 0 twice, 2 of the 4 items of source 1
    both = np.concatenate([e0, e1])
    assert np.bincount(both[both < 10], minlength=10).tolist() == [2] * 10 and (both >= 10).sum() == 2
    full = list(ClipSampler([10, 4], [2, 0.5], **kw))
    resumed = list(ClipSampler([10, 4], [2, 0.5], start=4, **kw))
    assert full[4:] == resumed and len(full) == 10
    assert len({s.seed for b in full for s in b}) == 30
