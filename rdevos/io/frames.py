"""Lazy frame sources: image folders, video files/streams and in-memory lists.

Every source yields :class:`Frame` objects one at a time; no source ever holds a
whole video in memory. Frames are always ``uint8`` RGB arrays of shape ``(H, W, 3)``.

Length of a source: :attr:`FrameSource.num_frames` is the frame count, or ``None``
when it cannot be known up front (live streams: RTSP, webcams, ...). ``len(source)``
returns the same count and raises :class:`TypeError` (so ``list(source)`` still
works) when it is unknown.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from rdevos.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameSource",
    "FolderSource",
    "VideoSource",
    "ListSource",
    "open_frames",
    "natural_sort_key",
    "to_rgb_array",
    "upright",
    "upright_size",
    "read_image",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif"}
)
# URL schemes of sources that have no end / cannot be counted or seeked.
_LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "mms", "mmsh"})
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in the source.
        name: file stem (folders) or zero-padded ``f"{index:05d}"`` (videos, lists).
        image: ``uint8`` RGB array of shape ``(H, W, 3)``.
    """

    index: int
    name: str
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])


def natural_sort_key(name: str) -> tuple[Any, ...]:
    """Sort key putting ``frame2`` before ``frame10`` (digit runs compared as numbers).

    Args:
        name: file name.

    Returns:
        A tuple usable as a ``sorted`` key (case-insensitive, ties broken by the raw name).
    """
    parts = re.split(r"(\d+)", name)
    key = tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p != "")
    return key + ((-1,), name)  # end marker: "frame2" < "frame2b"; then the raw name breaks ties


#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees, with or without a mirror).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ORIENTATION = 0x0112


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):  # a malformed EXIF block: shown as stored
        return 1


def upright(im: Image.Image) -> Image.Image:
    """The image as viewers show it: its EXIF orientation applied (``PIL.ImageOps.exif_transpose``).

    Phones store portrait photos sideways with an orientation tag; the frame and mask files rdevos segments
    (frame folders, single images, :func:`~rdevos.io.masks.read_mask`, ``rdevos mask``) go through this, so that
    frames and masks line up as the user sees them.
    Images without the tag are returned as they are (no copy).
    """
    if _orientation(im) == 1:
        return im
    return ImageOps.exif_transpose(im)


def upright_size(im: Image.Image) -> tuple[int, int]:
    """``(height, width)`` of :func:`upright` ``(im)``, from the header only."""
    width, height = im.size
    return (width, height) if _orientation(im) in _SWAPPING_ORIENTATIONS else (height, width)


def read_image(path: PathLike, *, what: str | None = None) -> np.ndarray:
    """Read one image file as a ``uint8`` RGB ``(H, W, 3)`` array, upright (EXIF orientation applied).

    Args:
        path: the image.
        what: how to call it in messages (default: ``"image '<path>'"``).

    Raises:
        InputError: missing, corrupt or not an image.
    """
    name = what or f"image '{path}'"
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_array(upright(im), what=name)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except _PIL_ERRORS as exc:
        raise InputError(f"cannot read {name} (corrupt or not an image): {exc}") from exc


def to_rgb_array(obj: Image.Image | np.ndarray, *, what: str = "image") -> np.ndarray:
    """Convert a PIL image or array to a contiguous ``uint8`` RGB array.

    Greyscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit images are converted.

    Args:
        obj: PIL image, or array of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``;
            dtype ``uint8``/``bool``, or float with values in ``[0, 1]``.
        what: description of the input used in error messages (e.g. a file name).

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        InputError: unsupported shape, dtype or value range.
    """
    if isinstance(obj, Image.Image):
        im = obj
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(im)
            return to_rgb_array(_scale_high_bit_depth(arr, what), what=what)
        if im.mode != "RGB":
            if im.mode in ("PA", "LA", "La") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")  # alpha is dropped below
            im = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{what}: expected a PIL image or numpy array, got {type(obj).__name__}")
    arr = obj
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise InputError(f"{what}: expected an image array of shape HxW, HxWx3 or HxWx4, got shape {obj.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what}: image has zero size {arr.shape[0]}x{arr.shape[1]}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise InputError(f"{what}: float images must have values in [0, 1] (or pass uint8 0..255)")
        arr = np.rint(arr * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(f"{what}: integer image values must be in 0..255, got {arr.min()}..{arr.max()}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"{what}: unsupported image dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _scale_high_bit_depth(arr: np.ndarray, what: str) -> np.ndarray:
    """Map a 16/32-bit or float greyscale array to uint8."""
    if np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        peak = float(finite.max(initial=0.0))
        if peak <= 1.0:
            return np.rint(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).astype(np.uint8)
        arr = np.clip(np.nan_to_num(arr), 0, 65535).astype(np.int64)
    arr = arr.astype(np.int64)
    peak = int(arr.max(initial=0))
    if peak <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    logger.debug("%s: scaling high bit-depth image (max %d) to 8 bits", what, peak)
    return (np.clip(arr, 0, 65535) // 257).astype(np.uint8)


class FrameSource:
    """Base class of lazy frame sources.

    Subclasses implement :attr:`num_frames`, :attr:`size`, :meth:`get` and ``__iter__``.
    """

    #: Human readable description used in log and error messages.
    description: str = "frames"

    @property
    def num_frames(self) -> int | None:
        """Number of frames, or ``None`` when unknown (live streams)."""
        raise NotImplementedError

    def __len__(self) -> int:
        n = self.num_frames
        if n is None:
            raise TypeError(f"{self.description}: the number of frames of a live stream is unknown (num_frames is None)")
        return n

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of every frame."""
        raise NotImplementedError

    @property
    def fps(self) -> float | None:
        """Frames per second, ``None`` when not applicable (image folders, lists)."""
        return None

    @property
    def names(self) -> list[str] | None:
        """Frame names in order, ``None`` when unknown (live streams)."""
        n = self.num_frames
        return None if n is None else [f"{i:05d}" for i in range(n)]

    def get(self, index: int) -> Frame:
        """Random access to frame ``index`` (negative indices count from the end).

        Args:
            index: frame position.

        Returns:
            The :class:`Frame`.

        Raises:
            IndexError: index out of range.
        """
        raise NotImplementedError

    def _normalize_index(self, index: int) -> int:
        n = self.num_frames
        i = int(index)
        if n is None:
            if i < 0:
                raise IndexError(f"{self.description}: negative index {index} on a stream of unknown length")
            return i
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.description}: frame index {index} out of range for {n} frames")
        return i

    def __getitem__(self, index: int) -> Frame:
        return self.get(index)

    def close(self) -> None:
        """Release resources (no-op for most sources)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, num_frames={self.num_frames})"


# --------------------------------------------------------------------------- folders


class FolderSource(FrameSource):
    """Frames read lazily from image files in a folder, in natural sort order.

    Supported: jpg, jpeg, png, webp, bmp (case-insensitive; hidden files are ignored).
    Every frame must have the size of the first one; this is checked when a frame is
    read. EXIF orientation is applied, as image viewers do (see :func:`upright`): a phone's portrait
    photo is a portrait frame.

    Args:
        path: folder of frames.

    Raises:
        InputError: not a folder, no image files, or two files with the same stem.
    """

    def __init__(self, path: PathLike) -> None:
        folder = Path(path)
        if not folder.exists():
            raise InputError(f"frame folder '{folder}' does not exist")
        if not folder.is_dir():
            raise InputError(f"'{folder}' is not a folder")
        files = [
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        ]
        if not files:
            exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            raise InputError(f"frame folder '{folder}' contains no image files ({exts})")
        self._init_files(sorted(files, key=lambda p: natural_sort_key(p.name)), str(folder))

    @classmethod
    def from_files(cls, files: Sequence[PathLike]) -> FolderSource:
        """Build a source from an explicit, already ordered list of image files.

        Args:
            files: image paths, in frame order.

        Returns:
            A :class:`FolderSource` over exactly these files.
        """
        paths = [Path(f) for f in files]
        if not paths:
            raise InputError("empty list of frame files")
        for p in paths:
            if not p.is_file():
                raise InputError(f"frame file '{p}' does not exist")
        self = cls.__new__(cls)
        self._init_files(paths, str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)")
        return self

    def _init_files(self, files: list[Path], description: str) -> None:
        seen: dict[str, Path] = {}
        for p in files:
            if p.stem in seen:
                raise InputError(
                    f"frames '{seen[p.stem]}' and '{p}' have the same name '{p.stem}'; "
                    "frame names must be unique (they name the output masks)"
                )
            seen[p.stem] = p
        self._files = files
        self._names = [p.stem for p in files]
        self._size: tuple[int, int] | None = None
        self.description = description

    @property
    def files(self) -> list[Path]:
        """Image paths in frame order."""
        return list(self._files)

    @property
    def num_frames(self) -> int:
        return len(self._files)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            path = self._files[0]
            try:
                with Image.open(path) as im:
                    self._size = upright_size(im)
            except _PIL_ERRORS as exc:
                raise InputError(f"cannot read frame '{path}': {exc}") from exc
        return self._size

    def _read(self, index: int) -> np.ndarray:
        path = self._files[index]
        arr = read_image(path, what=f"frame '{path}'")
        expected = self.size
        got = (int(arr.shape[0]), int(arr.shape[1]))
        if got != expected:
            raise InputError(
                f"frame '{path}' has size {got[0]}x{got[1]} (HxW) but the first frame "
                f"'{self._files[0].name}' has size {expected[0]}x{expected[1]}; all frames must have the same size"
            )
        return arr

    def get(self, index: int) -> Frame:
        i = self._normalize_index(index)
        return Frame(i, self._names[i], self._read(i))

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self._files)):
            yield Frame(i, self._names[i], self._read(i))


# --------------------------------------------------------------------------- lists


class ListSource(FrameSource):
    """Frames held by the caller: a sequence of PIL images or arrays (or a ``T x H x W x C`` array).

    Items are converted to RGB ``uint8`` when read (see :func:`to_rgb_array`).

    Args:
        frames: the images.
        names: optional frame names (default ``f"{i:05d}"``).
        fps: optional frame rate to report.

    Raises:
        InputError: empty input, wrong number of names, or (when read) an item of a different size.
    """

    def __init__(
        self,
        frames: Sequence[Image.Image | np.ndarray] | np.ndarray,
        names: Sequence[str] | None = None,
        fps: float | None = None,
    ) -> None:
        if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
            raise InputError(f"frame array must have shape TxHxW or TxHxWxC, got {frames.shape}")
        if len(frames) == 0:
            raise InputError("empty list of frames")
        self._frames = frames
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != len(frames):
                raise InputError(f"got {len(names)} names for {len(frames)} frames")
            if len(set(names)) != len(names):
                raise InputError("frame names must be unique")
        self._names = names
        self._fps = None if fps is None else float(fps)
        self._size: tuple[int, int] | None = None
        self.description = f"list of {len(frames)} frames"

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    @property
    def names(self) -> list[str]:
        if self._names is not None:
            return list(self._names)
        return [f"{i:05d}" for i in range(len(self._frames))]

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            first = self._frames[0]
            if isinstance(first, Image.Image):
                self._size = (first.size[1], first.size[0])
            else:
                self._size = tuple(to_rgb_array(first, what="frame 0").shape[:2])  # type: ignore[assignment]
        return self._size  # type: ignore[return-value]

    def get(self, index: int) -> Frame:
        i = self._normalize_index(index)
        arr = to_rgb_array(self._frames[i], what=f"frame {i}")
        expected = self.size
        if arr.shape[:2] != expected:
            raise InputError(
                f"frame {i} has size {arr.shape[0]}x{arr.shape[1]} (HxW) but frame 0 has size "
                f"{expected[0]}x{expected[1]}; all frames must have the same size"
            )
        name = self._names[i] if self._names is not None else f"{i:05d}"
        return Frame(i, name, arr)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self._frames)):
            yield self.get(i)


# --------------------------------------------------------------------------- videos


def _is_url(s: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) is not None


class VideoSource(FrameSource):
    """Frames decoded on the fly with PyAV from a video file, URL or capture device.

    Files (mp4/mov/mkv/avi/webm/...) have a known frame count: the stream metadata when
    present, otherwise the packets are counted once (demux only, no decoding). Live
    sources (rtsp/rtmp/udp/... URLs, and devices: ``/dev/video*`` or any non-file opened
    with an explicit ``format`` such as ``"v4l2"``) have ``num_frames is None`` and cannot
    be seeked. Remote non-live URLs (http) use the metadata count when present, else ``None``.

    The container's display rotation (phone videos) is applied, so frames come out
    upright. Frames whose size changes mid-stream are rescaled to the first frame's size.
    Corrupt data mid-stream raises :class:`InputError` naming the frame index (no
    silent truncation).

    Args:
        source: file path, URL (``rtsp://``, ``http://``, ...) or device path.
        format: FFmpeg input format, needed for capture devices (``"v4l2"``, ``"avfoundation"``, ``"dshow"``).
        options: FFmpeg demuxer options, e.g. ``{"rtsp_transport": "tcp"}``.
        timeout: network open/read timeout in seconds (URLs only).
        live: force (``True``) or disable (``False``) live-stream handling; ``None`` detects it.

    Raises:
        InputError: missing file, unreadable or non-video data, no video stream, or no decodable frame.
    """

    def __init__(
        self,
        source: PathLike,
        *,
        format: str | None = None,  # noqa: A002 - FFmpeg's name
        options: dict[str, str] | None = None,
        timeout: float | None = 10.0,
        live: bool | None = None,
    ) -> None:
        src = os.fspath(source)
        self._src = src
        self._format = format
        self._options = dict(options or {})
        self._is_url = _is_url(src)
        self._timeout = timeout if self._is_url else None
        self.description = src
        self._size: tuple[int, int] | None = None
        self._warned_resize = False
        if not self._is_url and format is None and not os.path.exists(src):
            raise InputError(f"video '{src}' does not exist")
        if not self._is_url and os.path.isdir(src):
            raise InputError(f"'{src}' is a folder, not a video (use FolderSource / open_frames for frame folders)")
        scheme = src.split("://", 1)[0].lower() if self._is_url else ""
        if live is None:
            live = scheme in _LIVE_SCHEMES or (
                not self._is_url and not os.path.isfile(src) and (format is not None or src.startswith("/dev/"))
            )
        self._live = bool(live)

        with self._open() as container:
            stream = self._video_stream(container)
            self._fps = self._stream_fps(stream)
            self._time_base = stream.time_base
            self._start_time = stream.start_time
            meta_frames = int(stream.frames or 0)
            first = None if self._live else self._first_frame(container, stream)
        self._num_frames: int | None
        if self._live:
            self._num_frames = None
        elif meta_frames > 0:
            self._num_frames = meta_frames
        elif self._is_url:
            self._num_frames = None
        else:
            self._num_frames = self._count_packets()
        if first is not None:
            self._size = (int(first.shape[0]), int(first.shape[1]))
        logger.debug("opened video %s: %s frames, fps=%s, size=%s", src, self._num_frames, self._fps, self._size)

    # -- helpers
    def _open(self) -> Any:
        import av

        kwargs: dict[str, Any] = {"mode": "r"}
        if self._format is not None:
            kwargs["format"] = self._format
        if self._options:
            kwargs["options"] = self._options
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        try:
            return av.open(self._src, **kwargs)
        except av.error.FileNotFoundError as exc:
            raise InputError(f"video '{self._src}' does not exist") from exc
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"cannot open video '{self._src}' (not a video, unsupported or unreachable): {exc}") from exc

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            raise InputError(f"'{self._src}' has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return stream

    @staticmethod
    def _stream_fps(stream: Any) -> float | None:
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate is not None and rate > 0:
                value = float(rate)
                if math.isfinite(value) and value < 1000:
                    return value
        return None

    def _to_array(self, frame: Any, index: int) -> np.ndarray:
        arr = frame.to_ndarray(format="rgb24")
        rotation = 0
        try:
            rotation = int(round((frame.rotation or 0) / 90.0)) % 4
        except (AttributeError, TypeError, ValueError):  # older PyAV
            rotation = 0
        if rotation:
            arr = np.rot90(arr, k=rotation)
        if self._size is not None and arr.shape[:2] != self._size:
            h, w = self._size
            if not self._warned_resize:
                logger.warning(
                    "%s: frame %d has size %dx%d, rescaling to the first frame's %dx%d",
                    self._src, index, arr.shape[0], arr.shape[1], h, w,
                )
                self._warned_resize = True
            arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), Image.BILINEAR))
        return np.ascontiguousarray(arr)

    def _decode(self, container: Any, stream: Any, start_index: int = 0) -> Iterator[Any]:
        """Yield decoded av frames; wraps FFmpeg errors into InputError."""
        import av

        index = start_index
        gen = container.decode(stream)
        while True:
            try:
                frame = next(gen)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise InputError(f"video '{self._src}': corrupt or undecodable data at frame {index}: {exc}") from exc
            if getattr(frame, "is_corrupt", False):  # the decoder concealed damaged data (PyAV >= 12 says so)
                raise InputError(f"video '{self._src}': corrupt data at frame {index} (the decoder could only "
                                 "conceal it); re-encode or repair the file")
            yield frame
            index += 1

    def _first_frame(self, container: Any, stream: Any) -> np.ndarray:
        for frame in self._decode(container, stream):
            return self._to_array(frame, 0)
        raise InputError(f"video '{self._src}' contains no decodable video frames")

    def _count_packets(self) -> int:
        import av

        count = 0
        with self._open() as container:
            stream = self._video_stream(container)
            try:
                for packet in container.demux(stream):
                    if packet.size > 0:
                        count += 1
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"video '{self._src}': cannot read stream (corrupt file?): {exc}") from exc
        if count == 0:
            raise InputError(f"video '{self._src}' contains no video frames")
        return count

    # -- public API
    @property
    def source(self) -> str:
        """The path / URL this source reads."""
        return self._src

    @property
    def is_live(self) -> bool:
        """True for live streams and devices (unknown length, no seeking)."""
        return self._live

    @property
    def num_frames(self) -> int | None:
        return self._num_frames

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            with self._open() as container:
                stream = self._video_stream(container)
                self._size = self._first_frame(container, stream).shape[:2]  # type: ignore[assignment]
        return self._size  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Frame]:
        n = self._num_frames
        with self._open() as container:
            stream = self._video_stream(container)
            i = -1
            for i, frame in enumerate(self._decode(container, stream)):
                arr = self._to_array(frame, i)
                if self._size is None:  # live streams: the first frame defines the size
                    self._size = (int(arr.shape[0]), int(arr.shape[1]))
                yield Frame(i, f"{i:05d}", arr)
        decoded = i + 1
        if decoded == 0:
            raise InputError(f"video '{self._src}' contains no decodable video frames")
        if n is not None and decoded != n:
            logger.warning("video %s: metadata announced %d frames but %d were decoded", self._src, n, decoded)
            self._num_frames = decoded

    def _frame_index(self, frame: Any) -> int | None:
        """Frame index from its timestamp (constant frame rate assumption), None if unknown."""
        if frame.pts is None or self._fps is None or self._time_base is None:
            return None
        start = self._start_time or 0
        return int(round(float((frame.pts - start) * self._time_base) * self._fps))

    def get(self, index: int) -> Frame:
        """Decode frame ``index`` (seek to the previous keyframe, then decode forward).

        Falls back to decoding from the start when timestamps are unreliable. Live
        sources cannot be seeked.
        """
        if self._live:
            raise InputError(f"'{self._src}' is a live stream: random access is not supported, iterate instead")
        i = self._normalize_index(index)
        if i > 0 and self._fps is not None and self._time_base is not None:
            result = self._get_by_seek(i)
            if result is not None:
                return result
        return self._get_linear(i)

    def _get_by_seek(self, index: int) -> Frame | None:
        import av

        target = int((self._start_time or 0) + (index / self._fps) / self._time_base)  # type: ignore[operator]
        with self._open() as container:
            stream = self._video_stream(container)
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except (av.error.FFmpegError, OSError) as exc:
                logger.debug("seek failed in %s: %s", self._src, exc)
                return None
            for frame in self._decode(container, stream, index):
                k = self._frame_index(frame)
                if k is None or k > index:
                    return None
                if k == index:
                    return Frame(index, f"{index:05d}", self._to_array(frame, index))
        return None

    def _get_linear(self, index: int) -> Frame:
        with self._open() as container:
            stream = self._video_stream(container)
            for i, frame in enumerate(self._decode(container, stream)):
                if i == index:
                    return Frame(index, f"{index:05d}", self._to_array(frame, index))
        raise IndexError(f"{self._src}: frame index {index} out of range (video ended early)")


# --------------------------------------------------------------------------- dispatch


def open_frames(
    source: PathLike | FrameSource | Sequence[Image.Image | np.ndarray] | np.ndarray,
    **video_kwargs: Any,
) -> FrameSource:
    """Open frames from a folder, image file, video file, URL/device, or in-memory images.

    Args:
        source: a :class:`FrameSource` (returned as is); a folder of images; a single image
            file (one-frame source); a video file; a URL or device (``rtsp://...``,
            ``/dev/video0``); a list of PIL images / ``HxWxC`` arrays; or a ``TxHxWxC`` array.
        **video_kwargs: passed to :class:`VideoSource` (``format``, ``options``, ``timeout``).

    Returns:
        A lazy :class:`FrameSource`.

    Raises:
        InputError: the source does not exist or cannot be interpreted.
    """
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, np.ndarray):
        return ListSource(source)
    if isinstance(source, (list, tuple)):
        return ListSource(source)
    if isinstance(source, Image.Image):
        return ListSource([source])
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"cannot open frames from a {type(source).__name__}")
    src = os.fspath(source)
    if _is_url(src) or video_kwargs.get("format") is not None:
        return VideoSource(src, **video_kwargs)
    path = Path(src)
    if path.is_dir():
        return FolderSource(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist (expected a frame folder, a video file or a URL)")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return FolderSource.from_files([path])
    return VideoSource(path, **video_kwargs)
