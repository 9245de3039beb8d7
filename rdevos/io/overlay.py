"""Visualisation: masks blended over frames, written as H.264 video or a small GIF preview."""

from __future__ import annotations

import io
import logging
import os
import contextlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.atomic import atomic_path, atomic_write
from rdevos.io.masks import DAVIS_PALETTE

__all__ = ["overlay_image", "OverlayWriter", "GifWriter"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_KERNEL3 = np.ones((3, 3), np.uint8)


def _colour_table(palette: Sequence[int] | None) -> np.ndarray:
    """``(256, 3)`` float32 colours; entries missing from ``palette`` come from ``DAVIS_PALETTE``."""
    pal = list(DAVIS_PALETTE if palette is None else palette)[:768]
    if len(pal) % 3:
        raise InputError(f"palette length must be a multiple of 3, got {len(pal)}")
    pal += list(DAVIS_PALETTE[len(pal):])
    return np.asarray(pal, dtype=np.float32).reshape(256, 3)


def _check_pair(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"overlay image must be uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    if labels.ndim != 2:
        raise InputError(f"overlay labels must be a 2-D HxW label map, got shape {labels.shape}")
    if labels.shape != image.shape[:2]:
        raise InputError(
            f"labels have size {labels.shape[0]}x{labels.shape[1]} (HxW) but the image is "
            f"{image.shape[0]}x{image.shape[1]} (HxW)"
        )
    if labels.dtype != np.uint8:
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        elif np.issubdtype(labels.dtype, np.integer) and (labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255)):
            labels = labels.astype(np.uint8)
        else:
            raise InputError(f"overlay labels must be integers in 0..255, got dtype {labels.dtype}")
    return image, np.ascontiguousarray(labels)


def overlay_image(
    image: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[int] | None = DAVIS_PALETTE,
    alpha: float = 0.5,
    contours: bool = True,
) -> np.ndarray:
    """Blend each object's palette colour over the frame and outline it.

    The contour is 2 px wide (one pixel on each side of every label boundary) and drawn
    opaque in the object's colour; boundaries between two objects show both colours.

    Args:
        image: ``uint8`` RGB frame ``(H, W, 3)``.
        labels: ``uint8`` label map ``(H, W)`` (0 = background).
        palette: flat palette (``DAVIS_PALETTE`` by default).
        alpha: opacity of the fill in ``[0, 1]``.
        contours: draw the outlines.

    Returns:
        New ``uint8`` RGB array ``(H, W, 3)``.
    """
    image, labels = _check_pair(image, labels)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    colours = _colour_table(palette)
    out = image.copy()
    fg = labels > 0
    if fg.any():
        src = image[fg].astype(np.float32)
        blended = (1.0 - alpha) * src + alpha * colours[labels[fg]]
        out[fg] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        if contours:
            lo = cv2.erode(labels, _KERNEL3)
            hi = cv2.dilate(labels, _KERNEL3)
            edge = lo != hi
            # object side: own colour; background side: colour of the neighbouring object
            edge_label = np.where(fg, labels, hi)
            edge &= edge_label > 0
            out[edge] = colours[edge_label[edge]].astype(np.uint8)
    return out


class OverlayWriter:
    """Context manager encoding overlay frames to an H.264 (``libx264``, ``yuv420p``) video.

    One output frame per :meth:`write` call, at constant ``fps``. Odd frame dimensions
    are padded by one pixel (edge replicated) since ``yuv420p`` needs even sizes. The
    video is written to a temporary file and moved onto ``path`` when the writer closes
    without error; on error the temporary file is deleted.

    Args:
        path: output file (``.mp4``, ``.mkv``, ``.mov``).
        fps: frame rate (e.g. the source's ``fps``, or 24 for image folders).
        size: ``(height, width)`` of the frames that will be written.
        palette: flat palette for object colours.
        alpha: fill opacity.
        contours: draw outlines.
        crf: x264 quality (lower is better, 23 default).
        preset: x264 speed preset.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        size: tuple[int, int],
        palette: Sequence[int] | None = DAVIS_PALETTE,
        *,
        alpha: float = 0.5,
        contours: bool = True,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        if fps is None or not (float(fps) > 0 and np.isfinite(float(fps))):
            raise InputError(f"overlay video needs a positive frame rate, got {fps}")
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            raise InputError(f"invalid overlay size {h}x{w}")
        self.path = Path(path)
        self.fps = float(fps)
        self.size = (h, w)
        self.palette = palette
        self.alpha = float(alpha)
        self.contours = bool(contours)
        self.frames_written = 0
        self._crf = int(crf)
        self._preset = preset
        self._enc_size = (h + h % 2, w + w % 2)
        self._container: Any = None
        self._stream: Any = None
        self._tmp: Path | None = None
        self._atomic = contextlib.ExitStack()
        self._time_base = Fraction(1, 1)

    def open(self) -> OverlayWriter:
        """Create the output (called by ``__enter__``)."""
        import av

        if self._container is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = contextlib.ExitStack()
        self._tmp = self._atomic.enter_context(atomic_path(self.path, suffix=self.path.suffix or ".mp4"))
        rate = Fraction(self.fps).limit_denominator(1001)
        try:
            self._container = av.open(str(self._tmp), mode="w")
            stream = self._container.add_stream("libx264", rate=rate)
            stream.height, stream.width = self._enc_size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self._crf), "preset": self._preset}
            self._stream = stream
            self._time_base = Fraction(rate.denominator, rate.numerator)
        except Exception as exc:
            self._cleanup()
            raise InputError(f"cannot create overlay video '{self.path}': {exc}") from exc
        if self._enc_size != self.size:
            logger.info(
                "overlay %s: padding %dx%d frames to even size %dx%d for yuv420p",
                self.path, *self.size, *self._enc_size,
            )
        return self

    def write(self, image_rgb: np.ndarray, labels: np.ndarray | None) -> None:
        """Encode one frame.

        Args:
            image_rgb: ``uint8`` RGB frame ``(H, W, 3)`` of the writer's ``size``.
            labels: ``uint8`` label map ``(H, W)``, or ``None`` to write the frame unchanged.
        """
        import av

        if self._container is None:
            self.open()
        if labels is None:
            img = np.asarray(image_rgb)
            _check_pair(img, np.zeros(img.shape[:2], np.uint8))
        else:
            img = overlay_image(image_rgb, labels, self.palette, self.alpha, self.contours)
        if img.shape[:2] != self.size:
            raise InputError(
                f"frame {self.frames_written} has size {img.shape[0]}x{img.shape[1]} (HxW) but the "
                f"overlay writer was opened for {self.size[0]}x{self.size[1]}"
            )
        if self._enc_size != self.size:
            ph, pw = self._enc_size[0] - self.size[0], self._enc_size[1] - self.size[1]
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished video onto ``path``."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            if self.frames_written == 0:
                logger.warning("overlay %s: no frames written, no video created", self.path)
                self._cleanup()
                return
            self._atomic.close()  # moves the finished file onto self.path
            self._tmp = None
            logger.debug("wrote overlay video %s (%d frames)", self.path, self.frames_written)
        except BaseException:
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                logger.debug("error closing %s", self._tmp, exc_info=True)
            self._container = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._atomic.close()  # nothing left to move: self.path stays untouched
            self._tmp = None

    def __enter__(self) -> OverlayWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._cleanup()


class GifWriter:
    """Context manager writing a small animated GIF preview with Pillow.

    Frames are downscaled so the longer side is at most ``max_side`` and quantised to 256
    colours as they arrive; only every ``every``-th written frame is kept, and at most
    ``max_frames`` (later ones are dropped with a warning) to bound memory. The GIF is
    written atomically on close.

    Args:
        path: output ``.gif``.
        fps: frame rate of the frames passed to :meth:`write` (the preview plays at ``fps / every``).
        max_side: longest side of the preview in pixels.
        every: keep one frame in ``every``.
        palette: object colours used when labels are given.
        alpha: fill opacity for overlays.
        contours: outline objects.
        max_frames: cap on stored frames.
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        max_side: int = 320,
        every: int = 1,
        *,
        palette: Sequence[int] | None = DAVIS_PALETTE,
        alpha: float = 0.5,
        contours: bool = True,
        max_frames: int = 500,
    ) -> None:
        if fps is None or not float(fps) > 0:
            raise InputError(f"GIF preview needs a positive frame rate, got {fps}")
        if int(every) < 1 or int(max_side) < 1:
            raise InputError("GIF 'every' and 'max_side' must be >= 1")
        self.path = Path(path)
        self.fps = float(fps)
        self.max_side = int(max_side)
        self.every = int(every)
        self.palette = palette
        self.alpha = float(alpha)
        self.contours = bool(contours)
        self.max_frames = int(max_frames)
        self._frames: list[Image.Image] = []
        self._kept = 0
        self._seen = 0
        self._warned = False

    def write(self, image_rgb: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add a frame (overlaid with ``labels`` when given).

        Args:
            image_rgb: ``uint8`` RGB frame ``(H, W, 3)``.
            labels: optional ``uint8`` label map ``(H, W)``.
        """
        index = self._seen
        self._seen += 1
        if index % self.every:
            return
        if len(self._frames) >= self.max_frames:
            if not self._warned:
                logger.warning("GIF %s: more than %d frames, dropping the rest", self.path, self.max_frames)
                self._warned = True
            return
        if labels is None:
            img = np.asarray(image_rgb)
            _check_pair(img, np.zeros(img.shape[:2], np.uint8))
        else:
            img = overlay_image(image_rgb, labels, self.palette, self.alpha, self.contours)
        im = Image.fromarray(np.ascontiguousarray(img))
        h, w = img.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        if self._frames and im.size != self._frames[0].size:
            raise InputError(f"GIF frame {index} has a different size than the first frame")
        self._frames.append(im.quantize(colors=256))
        self._kept += 1

    @property
    def frames_written(self) -> int:
        """Number of frames kept for the GIF (after ``every`` / ``max_frames``)."""
        return self._kept

    def close(self) -> None:
        """Encode and write the GIF (nothing is written when no frame was added)."""
        if not self._frames:
            logger.warning("GIF %s: no frames written, no file created", self.path)
            return
        duration = max(20, round(1000.0 * self.every / self.fps))

        buf = io.BytesIO()
        first, rest = self._frames[0], self._frames[1:]
        first.save(buf, format="GIF", save_all=True, append_images=rest, duration=duration, loop=0, disposal=1)
        with atomic_write(self.path) as fh:
            fh.write(buf.getvalue())
        logger.debug("wrote GIF preview %s (%d frames)", self.path, len(self._frames))
        self._frames = []

    def __enter__(self) -> GifWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._frames = []
