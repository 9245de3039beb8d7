"""Tests of rdevos.io.frames on the bundled sample clip and videos encoded from it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.frames import (
    FolderSource,
    Frame,
    ListSource,
    VideoSource,
    natural_sort_key,
    open_frames,
)
from rdevos.io.sample import sample_clip_dir

SAMPLE_N = 25
SAMPLE_SIZE = (270, 480)


def _encode(path: Path, images: list[np.ndarray], fps: float = 24, *, rotation: int | None = None) -> Path:
    """Encode RGB frames to H.264 with PyAV (near-lossless, so decoded frames stay close)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast", "g": "8", "threads": "1"}  # same bitstream on any core count
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def sample_images() -> list[np.ndarray]:
    return [f.image for f in FolderSource(sample_clip_dir())]


@pytest.fixture(scope="module")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory, sample_images: list[np.ndarray]) -> Path:
    return _encode(tmp_path_factory.mktemp("video") / "bear.mp4", sample_images, fps=24)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    im.save(path)
    return path


# --------------------------------------------------------------------------- folders


def test_sample_folder_basics(sample_images: list[np.ndarray]) -> None:
    src = open_frames(sample_clip_dir())
    assert isinstance(src, FolderSource)
    assert len(src) == src.num_frames == SAMPLE_N
    assert src.size == SAMPLE_SIZE
    assert src.fps is None
    assert src.names == [f"{i:05d}" for i in range(SAMPLE_N)]
    assert len(sample_images) == SAMPLE_N
    for img in sample_images:
        assert img.dtype == np.uint8 and img.shape == (*SAMPLE_SIZE, 3)
    f3 = src.get(3)
    assert isinstance(f3, Frame) and f3.index == 3 and f3.name == "00003"
    np.testing.assert_array_equal(f3.image, sample_images[3])
    assert src[-1].index == SAMPLE_N - 1
    with pytest.raises(IndexError):
        src.get(SAMPLE_N)


def test_natural_sort_order(tmp_path: Path) -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    for name in ["frame10.jpg", "frame2.png", "frame1.JPG", "frame02b.png", ".hidden1.jpg", "notes.txt"]:
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            _save(tmp_path / name, img)
    src = FolderSource(tmp_path)
    assert src.names == ["frame1", "frame2", "frame02b", "frame10"]
    assert sorted(["f10", "f9", "f1", "f1b", "F2"], key=natural_sort_key) == ["f1", "f1b", "F2", "f9", "f10"]


def test_modes_converted_to_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    _save(tmp_path / "00000.png", rgba)
    grey = np.full((5, 7), 77, np.uint8)
    _save(tmp_path / "00001.png", grey)
    Image.fromarray(np.full((5, 7, 3), (0, 128, 0), np.uint8)).quantize(4).save(tmp_path / "00002.png")
    Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(tmp_path / "00003.png")  # 16-bit greyscale
    frames = list(FolderSource(tmp_path))
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (5, 7, 3)
    np.testing.assert_array_equal(frames[0].image[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(frames[1].image[0, 0], [77, 77, 77])
    np.testing.assert_array_equal(frames[2].image[0, 0], [0, 128, 0])
    np.testing.assert_array_equal(frames[3].image[0, 0], [255, 255, 255])


def test_size_mismatch_detected_lazily(tmp_path: Path) -> None:
    _save(tmp_path / "00000.jpg", np.zeros((10, 20, 3), np.uint8))
    _save(tmp_path / "00001.jpg", np.zeros((10, 20, 3), np.uint8))
    _save(tmp_path / "00002.jpg", np.zeros((12, 20, 3), np.uint8))
    src = FolderSource(tmp_path)  # no error before reading
    it = iter(src)
    assert next(it).index == 0 and next(it).index == 1
    with pytest.raises(InputError) as err:
        next(it)
    msg = str(err.value)
    assert "00002.jpg" in msg and "12x20" in msg and "10x20" in msg


def test_corrupt_jpeg_in_middle(tmp_path: Path) -> None:
    clip = sample_clip_dir()
    for i in range(3):
        (tmp_path / f"{i:05d}.jpg").write_bytes((clip / f"{i:05d}.jpg").read_bytes())
    good = (clip / "00003.jpg").read_bytes()
    (tmp_path / "00001.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (tmp_path / "00002.jpg").write_bytes(b"this is not a jpeg")
    src = FolderSource(tmp_path)
    assert src.size == SAMPLE_SIZE
    it = iter(src)
    assert next(it).name == "00000"
    with pytest.raises(InputError, match="00001.jpg"):
        next(it)
    with pytest.raises(InputError, match="00002.jpg"):
        src.get(2)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no image files"):
        FolderSource(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="no image files"):
        open_frames(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        open_frames(tmp_path / "nope")


def test_duplicate_stems_rejected(tmp_path: Path) -> None:
    _save(tmp_path / "a.jpg", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="same name"):
        FolderSource(tmp_path)


def test_single_image_file(tmp_path: Path) -> None:
    path = _save(tmp_path / "still.png", np.full((6, 8, 3), 9, np.uint8))
    src = open_frames(path)
    assert src.names == ["still"] and src.size == (6, 8)
    assert next(iter(src)).image[0, 0, 0] == 9


# --------------------------------------------------------------------------- lists


def test_list_source() -> None:
    arrays = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    src = open_frames(arrays)
    assert isinstance(src, ListSource) and len(src) == 3 and src.size == (4, 6)
    assert [f.name for f in src] == ["00000", "00001", "00002"]
    pil = open_frames([Image.fromarray(a) for a in arrays])
    np.testing.assert_array_equal(pil.get(2).image, arrays[2])
    stack = open_frames(np.stack(arrays))
    assert len(stack) == 3 and stack.get(1).image[0, 0, 0] == 1
    floats = ListSource([np.ones((4, 6), np.float32)], names=["x"])
    assert floats.get(0).image.max() == 255 and floats.names == ["x"]
    bad = ListSource([arrays[0], np.zeros((5, 6, 3), np.uint8)])
    with pytest.raises(InputError, match="5x6"):
        list(bad)
    with pytest.raises(InputError):
        ListSource([])
    with pytest.raises(InputError):
        ListSource([np.full((4, 6), 2.0)]).get(0)


# --------------------------------------------------------------------------- videos


def test_mp4_roundtrip(sample_mp4: Path, sample_images: list[np.ndarray]) -> None:
    src = open_frames(sample_mp4)
    assert isinstance(src, VideoSource) and not src.is_live
    assert len(src) == SAMPLE_N
    assert src.size == SAMPLE_SIZE
    assert src.fps == pytest.approx(24.0)
    assert src.names == [f"{i:05d}" for i in range(SAMPLE_N)]
    decoded = list(src)
    assert len(decoded) == SAMPLE_N
    for frame, orig in zip(decoded, sample_images):
        assert frame.image.dtype == np.uint8 and frame.image.shape == orig.shape
        assert np.abs(frame.image.astype(np.int16) - orig).mean() < 4.0
    assert [f.name for f in decoded[:2]] == ["00000", "00001"]
    for k in (0, 9, 17, SAMPLE_N - 1, -2):  # seek + decode gives the same pixels as streaming
        f = src.get(k)
        np.testing.assert_array_equal(f.image, decoded[f.index].image)
    with pytest.raises(IndexError):
        src.get(SAMPLE_N)


def test_file_url_and_live_mode(sample_mp4: Path) -> None:
    url = sample_mp4.resolve().as_uri()  # file:// goes through the URL code path without a network
    src = open_frames(url)
    assert isinstance(src, VideoSource) and src.num_frames == SAMPLE_N
    assert not VideoSource(sample_mp4, format="mp4").is_live  # explicit format on a file: still a file
    live = VideoSource(sample_mp4, live=True)  # behaves like a camera / RTSP stream
    assert live.is_live and live.num_frames is None and live.names is None
    with pytest.raises(TypeError, match="unknown"):
        len(live)
    with pytest.raises(InputError, match="live"):
        live.get(0)
    assert sum(1 for _ in live) == SAMPLE_N
    assert live.size == SAMPLE_SIZE


def test_mkv_without_frame_count_metadata(tmp_path: Path, sample_images: list[np.ndarray]) -> None:
    path = _encode(tmp_path / "clip.mkv", [im[:64, :96] for im in sample_images[:6]], fps=10)
    src = VideoSource(path)
    assert src.num_frames == 6 and src.fps == pytest.approx(10.0) and src.size == (64, 96)


def test_rotation_metadata_applied(tmp_path: Path) -> None:
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # white block at the top-left of the stored frame
    src = VideoSource(_encode(tmp_path / "rot.mp4", [img] * 3, rotation=90))
    assert src.size == (64, 32)
    frame = src.get(0).image
    assert frame.shape == (64, 32, 3)
    assert frame[-4, 4].mean() > 200 and frame[4, 4].mean() < 50  # counter-clockwise: top-left -> bottom-left


def test_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("just some text, definitely not a video\n" * 20)
    with pytest.raises(InputError, match="notes.mp4"):
        open_frames(fake)
    with pytest.raises(InputError, match="does not exist"):
        VideoSource(tmp_path / "missing.mp4")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        open_frames(path)


def test_corrupt_mid_stream(tmp_path: Path, sample_mp4: Path) -> None:
    data = bytearray(sample_mp4.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 20000] = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    path = tmp_path / "broken.mp4"
    path.write_bytes(bytes(data))
    src = VideoSource(path)  # header and first frame are intact
    with pytest.raises(InputError, match=r"broken\.mp4.*frame \d+"):
        for _ in src:
            pass


def _save_sideways(src: np.ndarray, path: Path, orientation: int = 6) -> Path:
    """Store an image as a phone does: the pixels rotated, with the EXIF orientation that turns them upright."""
    stored = np.ascontiguousarray(np.rot90(src, k=1))  # 90 degrees counter-clockwise: orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def test_exif_orientation_applied_to_frames_and_masks(tmp_path: Path, sample_images: list[np.ndarray]) -> None:
    """Issue 25: EXIF-rotated JPEG frames were read sideways; frames and masks follow the orientation as viewers
    show them (PIL.ImageOps.exif_transpose)."""
    from rdevos.io.masks import read_mask
    from rdevos.io.sample import sample_mask_path

    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(3):
        _save_sideways(sample_images[i], folder / f"{i:05d}.jpg")
    assert Image.open(folder / "00000.jpg").size == (270, 480)  # stored sideways
    src = FolderSource(folder)
    assert src.size == SAMPLE_SIZE
    for i, fr in enumerate(src):
        assert fr.image.shape == (*SAMPLE_SIZE, 3)
        assert np.abs(fr.image.astype(int) - sample_images[i].astype(int)).mean() < 3  # upright, not mirrored
    single = open_frames(folder / "00001.jpg")  # a single image file too
    assert single.size == SAMPLE_SIZE and single.get(0).image.shape == (*SAMPLE_SIZE, 3)
    # a mask stored sideways with an orientation tag lines up with the frames
    labels = read_mask(sample_mask_path()).labels
    png = _save_sideways(labels * 255, tmp_path / "mask.png")
    np.testing.assert_array_equal(read_mask(png).labels, labels)
