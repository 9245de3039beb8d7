"""Tests of rdevos.io.masks: reading, validation and atomic writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.io import masks as masks_mod
from rdevos.io.masks import (
    DAVIS_PALETTE,
    LabelMask,
    as_label_mask,
    read_mask,
    read_probabilities,
    validate_mask,
    write_mask,
    write_object_masks,
    write_probabilities,
)
from rdevos.io.sample import sample_clip_dir, sample_mask_path

SAMPLE_SIZE = (270, 480)
DAVIS_ANNOTATION = Path(__file__).resolve().parents[2] / "../shared/data/davis2016-train/Annotations/bear/00000.png"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_read_sample_mask() -> None:
    mask = read_mask(sample_mask_path())
    assert isinstance(mask, LabelMask)
    assert mask.labels.dtype == np.uint8 and mask.size == SAMPLE_SIZE
    assert mask.object_ids == [1]
    assert mask.palette is not None and list(mask.palette) == list(DAVIS_PALETTE)
    # the sample mask matches the sample frames
    frame = Image.open(sample_clip_dir() / "00000.jpg")
    assert validate_mask(mask, (frame.height, frame.width), name="first_mask.png") is mask
    assert 0.05 < (mask.labels == 1).mean() < 0.3


def test_davis_palette() -> None:
    assert len(DAVIS_PALETTE) == 768 and all(0 <= v <= 255 for v in DAVIS_PALETTE)
    colours = np.asarray(DAVIS_PALETTE).reshape(256, 3)
    assert colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0]
    assert colours[2].tolist() == [0, 128, 0]
    assert colours[3].tolist() == [128, 128, 0]
    assert colours[4].tolist() == [0, 0, 128]
    assert colours[255].tolist() == [224, 224, 192]
    if DAVIS_ANNOTATION.is_file():  # the real DAVIS files store (at least) the first 8 colours
        real = Image.open(DAVIS_ANNOTATION).getpalette()
        assert real[:24] == list(DAVIS_PALETTE[:24])


def test_modes_l_and_1(tmp_path: Path) -> None:
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:3] = 1
    labels[4:, 5:] = 7
    Image.fromarray(labels).save(tmp_path / "l.png")
    m = read_mask(tmp_path / "l.png")
    assert m.palette is None and m.object_ids == [1, 7]
    np.testing.assert_array_equal(m.labels, labels)
    # black/white 0/255 greyscale is a binary mask
    Image.fromarray((labels > 0).astype(np.uint8) * 255).save(tmp_path / "bw.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "bw.png").labels, (labels > 0).astype(np.uint8))
    Image.fromarray(labels > 0).save(tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").mode == "1"
    np.testing.assert_array_equal(read_mask(tmp_path / "one.png").labels, (labels > 0).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_mask_rejected(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "colour.png"
    Image.new(mode, (8, 6), (128, 0, 0)).save(path)
    with pytest.raises(InputError) as err:
        read_mask(path)
    msg = str(err.value)
    assert "colour.png" in msg and mode in msg and "palette" in msg and "greyscale" in msg


def test_unreadable_masks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="bad.png"):
        read_mask(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_mask(tmp_path / "missing.png")


def test_validate_size_mismatch_and_empty() -> None:
    mask = read_mask(sample_mask_path())
    with pytest.raises(InputError) as err:
        validate_mask(mask, (100, 200), name="first_mask.png")
    msg = str(err.value)
    assert "270x480" in msg and "100x200" in msg and "first_mask.png" in msg
    empty = np.zeros(SAMPLE_SIZE, np.uint8)
    with pytest.raises(InputError, match="no object"):
        validate_mask(empty, SAMPLE_SIZE)
    assert validate_mask(empty, SAMPLE_SIZE, allow_empty=True).object_ids == []
    noisy = np.arange(64 * 64, dtype=np.int64).reshape(64, 64) % 256
    with pytest.raises(InputError, match="distinct labels"):
        validate_mask(noisy.astype(np.uint8), (64, 64), max_objects=20)


def test_as_label_mask_inputs() -> None:
    assert as_label_mask(np.array([[True, False]])).labels.tolist() == [[1, 0]]
    assert as_label_mask(np.array([[3, 0]], np.int64)).labels.dtype == np.uint8
    assert as_label_mask(np.zeros((2, 3, 1), np.uint8)).size == (2, 3)
    pil = Image.fromarray(np.array([[0, 2]], np.uint8))
    pil.putpalette(DAVIS_PALETTE)
    lm = as_label_mask(pil)
    assert lm.labels.tolist() == [[0, 2]] and lm.palette == list(DAVIS_PALETTE)
    assert as_label_mask(sample_mask_path()).object_ids == [1]
    with pytest.raises(InputError, match="0..255"):
        as_label_mask(np.array([[300]]))
    with pytest.raises(InputError, match="2-D"):
        as_label_mask(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        as_label_mask(Image.new("RGB", (2, 2)))


def test_write_mask_atomic_and_palette(tmp_path: Path) -> None:
    labels = np.zeros((9, 11), np.uint8)
    labels[2:5, 3:7] = 1
    labels[6:, :2] = 2
    out = tmp_path / "sub" / "00000.png"
    assert write_mask(out, labels) == out
    assert _listing(out.parent) == ["00000.png"]  # no temp file left behind
    with Image.open(out) as im:
        assert im.mode == "P"
        assert im.getpalette()[:9] == list(DAVIS_PALETTE[:9])
    np.testing.assert_array_equal(read_mask(out).labels, labels)
    custom = [0, 0, 0, 10, 20, 30, 40, 50, 60]
    write_mask(out, labels, custom)  # overwrite in place, short palette is completed
    got = read_mask(out)
    assert got.palette is not None and got.palette[:9] == custom and len(got.palette) == 768
    np.testing.assert_array_equal(got.labels, labels)
    assert _listing(out.parent) == ["00000.png"]


def test_write_mask_interrupted_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.png"
    old = np.ones((4, 4), np.uint8)
    write_mask(out, old)

    def boom(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(masks_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_mask(out, np.full((4, 4), 2, np.uint8))
    monkeypatch.undo()
    assert _listing(tmp_path) == ["m.png"]
    np.testing.assert_array_equal(read_mask(out).labels, old)


def test_write_probabilities_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 12, 10)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)  # (K+1, H, W)
    out = tmp_path / "probs" / "00003.npz"
    write_probabilities(out, probs, object_ids=[0, 1, 2])
    assert _listing(out.parent) == ["00003.npz"]
    with np.load(out) as data:
        assert data["probs"].dtype == np.uint8 and data["probs"].shape == (3, 12, 10)
        assert data["object_ids"].tolist() == [0, 1, 2]
    back = read_probabilities(out)
    assert back.dtype == np.float32
    assert np.abs(back - probs).max() <= 0.5 / 255 + 1e-6
    write_probabilities(tmp_path / "k.npz", probs[1:])  # (K, H, W) without background
    assert read_probabilities(tmp_path / "k.npz").shape == (2, 12, 10)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        write_probabilities(tmp_path / "bad.npz", probs * 3)
    with pytest.raises(InputError, match="shape"):
        write_probabilities(tmp_path / "bad.npz", probs[0])
    assert not (tmp_path / "bad.npz").exists()


def test_write_object_masks(tmp_path: Path) -> None:
    labels = np.zeros((5, 6), np.uint8)
    labels[0, 0] = 1
    labels[4, 5] = 3
    paths = write_object_masks(tmp_path, "00007", labels, [1, 2, 3])
    assert paths == [tmp_path / str(k) / "00007.png" for k in (1, 2, 3)]
    for k, path in zip((1, 2, 3), paths):
        with Image.open(path) as im:
            assert im.mode == "L"
            arr = np.asarray(im)
        np.testing.assert_array_equal(arr, np.where(labels == k, 255, 0))
        assert _listing(path.parent) == ["00007.png"]
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))
