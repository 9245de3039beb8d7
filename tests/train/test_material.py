"""The lite3 training material: coco (YOLO-seg) pseudo-videos, up to 4 objects per clip, copy-paste of rescaled
drifting objects, motion blur, and the config fields that control them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.errors import InputError
from rdevos.train.config import MAX_OBJECTS, DataSource, SourceKind, StageConfig, TrainConfig
from rdevos.train.data import CocoPseudoVideoDataset, VOSClipDataset, motion_blur, read_yolo_seg
from rdevos.train.trainer import build_stage_dataset
from tests.conftest import REPO, SHARED
from tests.train.test_data import _fake_davis

COCO128 = SHARED / "data" / "coco128-seg"


def _fake_yolo(root: Path, n_images: int = 3, size: tuple[int, int] = (96, 64)) -> Path:
    """Images with three square instances each, the third overlapping the first, in the YOLO-seg layout."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    rng = np.random.default_rng(1)
    w, h = size
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / "train" / f"im{i}.jpg")
        lines = []
        for x0, y0, x1, y1 in ((0.1, 0.1, 0.5, 0.6), (0.6, 0.2, 0.9, 0.9), (0.3, 0.3, 0.45, 0.5)):
            lines.append("3 " + " ".join(f"{x:.4f} {y:.4f}" for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))))
        (root / "labels" / "train" / f"im{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_read_yolo_seg_rasterises_instances_in_file_order(tmp_path: Path) -> None:
    root = _fake_yolo(tmp_path / "c", 1)
    lab = read_yolo_seg(root / "labels" / "train" / "im0.txt", 64, 96)
    assert lab.shape == (64, 96) and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}
    assert lab[int(0.4 * 64), int(0.37 * 96)] == 3  # the later instance is drawn over the first one
    assert lab[int(0.15 * 64), int(0.15 * 96)] == 1
    small = read_yolo_seg(root / "labels" / "train" / "im0.txt", 64, 96, min_area=300)
    assert (lab == 3).sum() < 300 < (lab == 1).sum()
    assert 3 not in np.unique(small) and (small == 1).sum() == (lab == 1).sum()
    bad = tmp_path / "bad.txt"
    bad.write_text("3 0.1 0.2 0.3\n")
    with pytest.raises(InputError, match="even number"):
        read_yolo_seg(bad, 10, 10)
    bad.write_text("cat 0.1 0.2 0.3 0.4 0.5 0.6\n")
    with pytest.raises(InputError, match="YOLO-seg"):
        read_yolo_seg(bad, 10, 10)


def test_coco_pseudo_videos_have_up_to_three_visible_objects(tmp_path: Path) -> None:
    root = _fake_yolo(tmp_path / "c", 3)
    (root / "images" / "train" / "nolabel.jpg").write_bytes((root / "images" / "train" / "im0.jpg").read_bytes())
    ds = CocoPseudoVideoDataset(root, num_frames=3, crop_size=64, max_objects=3, exclude=["im2"], cache=True)
    assert len(ds) == 2 and ds.report.skipped["excluded"] == 1 and ds.report.skipped["missing_labels"] == 1
    counts = []
    for seed in range(8):
        s = ds[(seed % 2, seed)]
        assert s["rgb"].shape == (3, 3, 64, 64) and s["gt"].shape == (3, 3, 64, 64)
        n = int(s["selector"].sum())
        counts.append(n)
        assert all(s["gt"][0, k].sum() > 0 for k in range(n))  # every chosen object is seen in the first frame
        assert set(s["cls_gt"].unique().tolist()) <= set(range(n + 1))
        assert s["info"]["name"].startswith("coco:")
    assert max(counts) == 3
    again = ds[(0, 0)]
    assert torch.equal(again["rgb"], ds[(0, 0)]["rgb"])
    with pytest.raises(InputError, match="not found"):
        CocoPseudoVideoDataset(root, sequences=["im0", "zzz"])
    with pytest.raises(InputError, match="YOLO-seg"):
        CocoPseudoVideoDataset(tmp_path)


def test_three_objects_and_rescaled_drifting_copy_paste(tmp_path: Path) -> None:
    root = _fake_davis(tmp_path / "d", {"a": 6, "b": 6, "c": 6}, size=(64, 48))
    ds = VOSClipDataset(root, num_frames=3, crop_size=48, max_objects=3, copy_paste_prob=1.0, copy_paste_max=2,
                        copy_paste_scale=(0.5, 0.5), reverse_prob=0.0)
    seen = set()
    for seed in range(10):
        s = ds[(seed % 3, seed)]
        seen.add(int(s["selector"].sum()))
        assert s["gt"].shape[1] == 3
    assert 3 in seen  # two objects of the sequence + pasted ones: three picked
    # A half-size pasted object drifts: its mask is smaller than the donor's and moves between frames.
    one = VOSClipDataset(root, sequences=["a", "b"], num_frames=3, crop_size=48, max_objects=4, copy_paste_prob=1.0,
                         copy_paste_scale=(0.5, 0.5), reverse_prob=0.0, augment=False)
    plain = VOSClipDataset(root, sequences=["a", "b"], num_frames=3, crop_size=48, max_objects=4, reverse_prob=0.0,
                           augment=False)
    s, p = one[(0, 3)], plain[(0, 3)]
    assert int(s["selector"].sum()) == 3 and int(p["selector"].sum()) == 2
    labels = s["cls_gt"]
    pasted = [k for k in range(1, 4) if (labels == k).any()]
    assert len(pasted) == 3
    area_plain = max(float((p["cls_gt"][0] == k).sum()) for k in (1, 2))
    areas = sorted(float((labels[0] == k).sum()) for k in pasted)
    assert areas[0] < 0.5 * area_plain  # a quarter of the area (minus occlusion)


def test_motion_blur_smears_along_one_direction() -> None:
    img = np.zeros((21, 21, 3), np.float32)
    img[10, 10] = 90.0
    out = motion_blur(img, 9, 0.0)
    assert out.shape == img.shape and out.sum() == pytest.approx(img.sum(), rel=1e-4)
    row = out[10, :, 0]
    assert (row[6:15] > 0).all() and out[5, 10, 0] == 0  # horizontal: the column is untouched away from the row
    vert = motion_blur(img, 9, 90.0)
    assert (vert[6:15, 10, 0] > 0).all() and vert[10, 5, 0] == 0
    assert motion_blur(img, 1, 0.0) is img


def test_config_fields_for_the_new_material(tmp_path: Path) -> None:
    src = {"kind": "synthetic"}
    assert StageConfig(max_objects=3, sources=(src,)).max_objects == 3
    with pytest.raises(InputError, match=f"1..{MAX_OBJECTS}"):
        StageConfig(max_objects=MAX_OBJECTS + 1, sources=(src,))
    with pytest.raises(InputError, match="max_objects"):
        StageConfig(max_objects=2, single_object=True, sources=(src,))
    with pytest.raises(InputError, match="motion_blur"):
        StageConfig(motion_blur_prob=1.5, sources=(src,))
    with pytest.raises(InputError, match="motion_blur"):
        StageConfig(motion_blur_max=2, sources=(src,))
    with pytest.raises(InputError, match="copy_paste_scale"):
        DataSource(kind="davis", root="x", copy_paste_scale=(0.8, 0.4))
    with pytest.raises(InputError, match="copy_paste_scale"):
        DataSource(kind="davis", root="x", copy_paste_scale=(0.5,))
    with pytest.raises(InputError, match="copy_paste_max"):
        DataSource(kind="davis", root="x", copy_paste_max=0)
    with pytest.raises(InputError, match="min_area"):
        DataSource(kind="coco", root="x", min_area=-1)
    with pytest.raises(InputError, match="needs a root"):
        DataSource(kind="coco")
    assert DataSource(kind="coco", root="x").kind is SourceKind.COCO
    # The stage's data mix builds a coco dataset with the stage's clip and blur settings.
    root = _fake_yolo(tmp_path / "c", 2)
    stage = StageConfig(num_frames=3, crop_size=32, max_objects=3, motion_blur_prob=0.5,
                        sources=({"kind": "coco", "root": str(root), "weight": 2, "min_area": 10},))
    mixed, weights = build_stage_dataset(stage)
    (coco,) = mixed.datasets
    assert isinstance(coco, CocoPseudoVideoDataset) and weights == [2]
    assert coco.min_area == 10 and coco.opts.max_objects == 3 and coco.opts.motion_blur_prob == 0.5


def test_lite3_preset_round_trips_and_holds_out_its_check_data() -> None:
    cfg = TrainConfig.from_yaml(REPO / "configs" / "lite3-davis.yaml")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    lite2 = TrainConfig.from_yaml(REPO / "configs" / "lite2-davis.yaml")
    assert cfg.val_sequences == lite2.val_sequences  # the same held-out videos as the model it starts from
    assert cfg.model == lite2.model
    coco = [s for s in cfg.stages[0].sources if s.kind is SourceKind.COCO]
    assert len(coco) == 1 and len(coco[0].exclude) == 20
    if COCO128.is_dir():
        stems = {p.stem for p in (COCO128 / "images").rglob("*.jpg")}
        assert set(coco[0].exclude) <= stems
