"""Tests of rdevos.io.overlay: overlay_image, OverlayWriter (H.264) and GifWriter."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.frames import FolderSource, VideoSource
from rdevos.io.masks import DAVIS_PALETTE, read_mask
from rdevos.io.overlay import GifWriter, OverlayWriter, overlay_image
from rdevos.io.sample import sample_clip_dir, sample_mask_path

N_FRAMES = 10


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], np.ndarray]:
    src = FolderSource(sample_clip_dir())
    images = [src.get(i).image for i in range(N_FRAMES)]
    return images, read_mask(sample_mask_path()).labels


def test_overlay_image_colours() -> None:
    image = np.full((20, 20, 3), 100, np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    out = overlay_image(image, labels, DAVIS_PALETTE, alpha=0.5, contours=True)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[10, 10], [114, 50, 50])  # 0.5 * 100 + 0.5 * (128, 0, 0)
    np.testing.assert_array_equal(out[5, 10], [128, 0, 0])  # contour, inside
    np.testing.assert_array_equal(out[4, 10], [128, 0, 0])  # contour, outside
    np.testing.assert_array_equal(out[3, 10], [100, 100, 100])
    no_contour = overlay_image(image, labels, DAVIS_PALETTE, alpha=0.5, contours=False)
    np.testing.assert_array_equal(no_contour[5, 10], [114, 50, 50])
    np.testing.assert_array_equal(overlay_image(image, labels, alpha=0.0, contours=False), image)
    # two touching objects: each side of the shared border shows its own colour
    labels[5:15, 10:15] = 2
    two = overlay_image(image, labels, alpha=0.5)
    np.testing.assert_array_equal(two[10, 9], [128, 0, 0])
    np.testing.assert_array_equal(two[10, 10], [0, 128, 0])
    with pytest.raises(InputError, match="HxW"):
        overlay_image(image, labels[:10], alpha=0.5)


def _decode_all(path: Path) -> tuple[int, float, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate), (stream.height, stream.width), stream.codec_context.name


def test_overlay_writer_mp4(tmp_path: Path, clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    images, labels = clip
    out = tmp_path / "out" / "overlay.mp4"
    with OverlayWriter(out, fps=12.5, size=images[0].shape[:2], palette=DAVIS_PALETTE) as writer:
        for img in images:
            writer.write(img, labels)
    assert writer.frames_written == N_FRAMES
    assert [p.name for p in out.parent.iterdir()] == ["overlay.mp4"]
    count, fps, size, codec = _decode_all(out)
    assert count == N_FRAMES and fps == pytest.approx(12.5) and size == images[0].shape[:2] and codec == "h264"
    # the decoded overlay is close to overlay_image's output
    first = VideoSource(out).get(0).image
    expected = overlay_image(images[0], labels, DAVIS_PALETTE, 0.5, True)
    assert np.abs(first.astype(np.int16) - expected).mean() < 6.0


def test_overlay_writer_odd_size_padded(tmp_path: Path, clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    images, labels = clip
    out = tmp_path / "odd.mp4"
    crop = (slice(0, 101), slice(0, 151))
    with OverlayWriter(out, fps=24, size=(101, 151)) as writer:
        for img in images[:4]:
            writer.write(img[crop], labels[crop])
        writer.write(images[4][crop], None)  # plain frame without mask
        with pytest.raises(InputError, match="101x151"):
            writer.write(images[5], labels)
    count, fps, size, _ = _decode_all(out)
    assert count == 5 and fps == pytest.approx(24.0) and size == (102, 152)


def test_overlay_writer_error_leaves_nothing(tmp_path: Path, clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    images, labels = clip
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError):
        with OverlayWriter(out, fps=24, size=images[0].shape[:2]) as writer:
            writer.write(images[0], labels)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_gif_writer(tmp_path: Path, clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    images, labels = clip
    out = tmp_path / "preview.gif"
    with GifWriter(out, fps=10, max_side=160, every=2) as gif:
        for img in images:
            gif.write(img, labels)
    assert gif.frames_written == N_FRAMES // 2
    assert [p.name for p in tmp_path.iterdir()] == ["preview.gif"]
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == N_FRAMES // 2
        assert max(im.size) == 160 and im.size == (160, 90)
        assert im.info["duration"] == 200
        rgb = np.asarray(im.convert("RGB"))
    # the bear is tinted red in the preview
    small = np.asarray(Image.fromarray(labels * 255).resize((160, 90), Image.Resampling.NEAREST)) > 0
    assert rgb[small][:, 0].mean() > rgb[small][:, 1].mean() + 30
