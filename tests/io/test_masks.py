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


def _save_rgb(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb.astype(np.uint8), mode="RGBA" if rgb.shape[-1] == 4 else "RGB").save(path)
    assert Image.open(path).mode in ("RGB", "RGBA")
    return path


def test_white_on_black_rgb_png_is_a_binary_mask(tmp_path: Path) -> None:
    sample = read_mask(sample_mask_path()).labels
    rgb = np.repeat((sample > 0)[..., None] * 255, 3, axis=2)
    m = read_mask(_save_rgb(tmp_path / "white.png", rgb))
    assert m.object_ids == [1] and m.palette is None
    np.testing.assert_array_equal(m.labels, (sample > 0).astype(np.uint8))
    # grey RGB (R == G == B): the values are labels, as in an 'L' mask
    grey = np.zeros((6, 8, 3), np.uint8)
    grey[1:3, 1:3] = 2
    grey[4:, 5:] = 5
    assert read_mask(_save_rgb(tmp_path / "grey.png", grey)).labels.tolist() == grey[..., 0].tolist()


def test_rgb_export_of_a_davis_annotation_keeps_its_labels(tmp_path: Path) -> None:
    labels = np.zeros((30, 40), np.uint8)
    labels[2:10, 2:10] = 5  # listed first in raster order, but keeps its palette index
    labels[12:20, 5:30] = 1
    labels[22:, 30:] = 2
    write_mask(tmp_path / "p.png", labels)
    Image.open(tmp_path / "p.png").convert("RGB").save(tmp_path / "rgb.png")
    m = read_mask(tmp_path / "rgb.png")
    np.testing.assert_array_equal(m.labels, labels)
    assert m.palette == list(DAVIS_PALETTE)


def test_colour_coded_rgb_mask_ids_by_first_appearance(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[6:9, 0:3] = (255, 0, 255)  # lower left
    rgb[1:3, 8:11] = (0, 200, 255)  # upper right: first in raster order -> object 1
    rgb[4, 4:6] = (128, 0, 0)  # a DAVIS colour among other colours gets a raster-order id too
    m = read_mask(_save_rgb(tmp_path / "coded.png", rgb))
    want = np.zeros((10, 12), np.uint8)
    want[1:3, 8:11], want[4, 4:6], want[6:9, 0:3] = 1, 2, 3
    np.testing.assert_array_equal(m.labels, want)
    assert m.palette is not None and m.palette[:12] == [0, 0, 0, 0, 200, 255, 128, 0, 0, 255, 0, 255]
    # RGBA: fully transparent pixels are background whatever their colour
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 255, np.uint8)], axis=2)
    rgba[6:9, 0:3, 3] = 0
    rgba[0, 0] = (9, 9, 9, 0)
    m = read_mask(_save_rgb(tmp_path / "coded_rgba.png", rgba))
    assert m.object_ids == [1, 2] and (m.labels[6:9, 0:3] == 0).all() and m.labels[0, 0] == 0
    # the same rules for a PIL image given directly
    np.testing.assert_array_equal(as_label_mask(Image.fromarray(rgb)).labels, want)


def test_photo_rejected_as_a_mask(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.open(sample_clip_dir() / "00000.jpg").convert("RGB").save(path)
    with pytest.raises(InputError) as err:
        read_mask(path)
    msg = str(err.value)
    assert "photo.png" in msg and "colours" in msg and "photo" in msg and "palette" in msg and "greyscale" in msg
    # one colour too many for the limit
    rgb = np.zeros((4, masks_mod.MAX_MASK_COLOURS + 1, 3), np.uint8)
    rgb[0, :, 0] = np.arange(1, masks_mod.MAX_MASK_COLOURS + 2)
    rgb[0, :, 1] = 7
    with pytest.raises(InputError, match=f"{masks_mod.MAX_MASK_COLOURS + 1} colours"):
        read_mask(_save_rgb(tmp_path / "many.png", rgb))
    rgb[0, -1] = 0
    assert len(read_mask(_save_rgb(tmp_path / "max.png", rgb)).object_ids) == masks_mod.MAX_MASK_COLOURS


def test_other_modes_rejected_with_the_right_article(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "i16.png")
    with pytest.raises(InputError, match=r"is an I;16 image"):
        read_mask(tmp_path / "i16.png")
    with pytest.raises(InputError, match=r"is a CMYK image"):
        as_label_mask(Image.new("CMYK", (2, 2)))


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


def test_masks_a_few_pixels_off_are_resized(caplog: pytest.LogCaptureFixture) -> None:
    mask = read_mask(sample_mask_path())  # 270x480, like its frames
    off = LabelMask(np.asarray(Image.fromarray(mask.labels).resize((479, 270), Image.NEAREST)), mask.palette)
    with caplog.at_level("WARNING", logger="rdevos.io.masks"):
        fitted = masks_mod.fit_mask_to_frame(off, SAMPLE_SIZE, name="judo.png")
    assert fitted.size == SAMPLE_SIZE and fitted.palette == mask.palette
    assert (fitted.labels == mask.labels).mean() > 0.99
    assert "judo.png" in caplog.text and "270x479" in caplog.text and "resized" in caplog.text
    assert validate_mask(off, SAMPLE_SIZE).size == SAMPLE_SIZE
    assert masks_mod.fit_mask_to_frame(mask, SAMPLE_SIZE) is mask
    # a real mismatch (other size or other aspect ratio) stays an error
    for h, w in ((135, 240), (270, 470), (266, 480)):
        small = LabelMask(np.ones((h, w), np.uint8))
        with pytest.raises(InputError, match=rf"{h}x{w} \(HxW\) but the frames are 270x480"):
            masks_mod.fit_mask_to_frame(small, SAMPLE_SIZE, name="m.png")


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


def test_one_rule_for_0_255_masks_in_inference_and_training(tmp_path) -> None:
    from PIL import Image as _Image

    from rdevos.io.masks import read_mask as _read
    from rdevos.train.data import load_label_mask

    bw = np.zeros((4, 5), np.uint8)
    bw[1:3, 1:4] = 255
    _Image.fromarray(bw, mode="L").save(tmp_path / "bw.png")
    pal = _Image.fromarray(np.where(bw > 0, 255, 1).astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "pal.png")
    for p in ("bw.png", "pal.png"):
        np.testing.assert_array_equal(_read(tmp_path / p).labels, load_label_mask(tmp_path / p))
    assert set(np.unique(load_label_mask(tmp_path / "bw.png"))) == {0, 1}  # greyscale 0/255: binary
    assert set(np.unique(load_label_mask(tmp_path / "pal.png"))) == {1, 255}  # palette index 255: a label
    _Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="annotation mode"):
        load_label_mask(tmp_path / "rgb.png")


# ------------------------------------------------------------------ lossy (JPEG / anti-aliased) greyscale masks
def _bw_sample() -> np.ndarray:
    return (read_mask(sample_mask_path()).labels > 0).astype(np.uint8)


@pytest.mark.parametrize("quality", [100, 95, 75, 50])
def test_jpeg_compressed_black_white_mask_is_cleaned_with_a_warning(tmp_path: Path, quality: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Issue 25 (3): the sample mask saved as a lossy 0/255 JPEG held 28 grey values and became 27 objects."""
    want = _bw_sample()
    jpg = tmp_path / "mask.jpg"
    Image.fromarray(want * 255, mode="L").save(jpg, quality=quality)
    png = tmp_path / "from_jpeg.png"  # the same artefacts in a lossless file
    Image.open(jpg).save(png)
    assert len(np.unique(np.asarray(Image.open(png)))) > 2
    for path in (jpg, png):
        caplog.clear()
        with caplog.at_level("WARNING", logger="rdevos.io.masks"):
            lm = read_mask(path)
        assert lm.object_ids == [1]
        assert (lm.labels == want).mean() > 0.9999  # the artefacts snap back to the drawn 0/255
        (rec,) = [r for r in caplog.records if r.levelname == "WARNING"]
        assert path.name in rec.getMessage() and "JPEG" in rec.getMessage() and "pixels" in rec.getMessage()
    # the API path (a PIL image, as pipeline() and VideoSession.add_mask take it) follows the same rule
    assert validate_mask(Image.open(jpg), SAMPLE_SIZE).object_ids == [1]


def test_real_multi_object_greyscale_masks_are_read_as_they_are(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Lossless label maps keep every label: ids 1..K, values 0/1/2, a thin object, spread ids; no warning."""
    from tests.conftest import split_objects

    base = _bw_sample()
    cases = {
        "ids": split_objects(base, (1, 2, 3)),
        "values012": split_objects(base, (1, 2)),
        "spread": split_objects(base, (64, 128, 255)),
        "davis2017": split_objects(base, (1, 2, 3, 4, 5)),
    }
    thin = split_objects(base, (1, 2, 3))
    thin[10:12, 20:200] = 4  # a two-pixel-wide object (a leash, a rope): no flat region, still an object
    cases["thin"] = thin
    for name, labels in cases.items():
        Image.fromarray(labels, mode="L").save(tmp_path / f"{name}.png")
        with caplog.at_level("WARNING", logger="rdevos.io.masks"):
            lm = read_mask(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(lm.labels, labels, err_msg=name)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_greyscale_photo_or_blurred_mask_is_refused(tmp_path: Path) -> None:
    photo = tmp_path / "grey_photo.png"
    Image.open(sample_clip_dir() / "00000.jpg").convert("L").save(photo)
    with pytest.raises(InputError, match="grey_photo.png.* is not a label map.*photo"):
        read_mask(photo)


def test_real_label_maps_are_never_taken_for_lossy() -> None:
    """The lossy rule on real lossless label maps read as greyscale: the COCO-128 instance maps (up to 60 objects,
    small and thin ones among them, rasterised from the polygons) and DAVIS annotations come back unchanged."""
    from PIL import ImageDraw

    from tests.conftest import DAVIS16, DAVIS_MINI, SHARED

    coco = SHARED / "data" / "coco128-seg"
    if not coco.is_dir() or not DAVIS16.is_dir():
        pytest.skip(f"COCO-128 or DAVIS-2016 data not found under {SHARED} (set RDEVOS_SHARED)")
    maps: list[np.ndarray] = []
    for txt in sorted((coco / "labels").glob("*/*.txt")):
        image = coco / "images" / txt.parent.name / f"{txt.stem}.jpg"
        if not image.is_file():
            continue
        w, h = Image.open(image).size
        im = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(im)
        rows = [r.split() for r in txt.read_text().splitlines() if len(r.split()) >= 7]
        for k, r in enumerate(rows[:255], start=1):
            draw.polygon([(float(r[i]) * w, float(r[i + 1]) * h) for i in range(1, len(r) - 1, 2)], fill=k)
        maps.append(np.asarray(im))
    golden = Path(__file__).resolve().parents[1] / "data" / "jf-golden"  # DAVIS-2017-style multi-object maps
    annotations = (sorted(DAVIS16.glob("Annotations/*/*.png"))[::40] + sorted(DAVIS_MINI.glob("Annotations/*/*.png"))
                   + sorted(golden.glob("**/*.png"))[::4])
    maps += [np.asarray(Image.open(p)) for p in annotations]
    values = [set(np.flatnonzero(np.bincount(m.ravel(), minlength=256)).tolist()) for m in maps]
    assert len(maps) > 250 and sum(len(v) > 10 for v in values) > 20  # many multi-object maps
    for m, v in zip(maps, values):
        want = (m == 255).astype(np.uint8) if v == {0, 255} else m
        assert (masks_mod._grey_labels(m, "mask") == want).all()
