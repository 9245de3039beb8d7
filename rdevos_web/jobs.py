"""Work folder, upload import and background segmentation jobs of the web app.

No Gradio here: everything the app does to files and jobs lives in this module, so it is tested without a browser.

Work folder layout (everything the app writes stays under it)::

    WORK/
      .server.lock            held by the one server that uses the folder
      .gradio/                Gradio's upload cache (``rdevos serve`` points GRADIO_TEMP_DIR here)
      jobs/<job id>/
        job.json              status, progress and the last run's settings (rewritten atomically)
        frames/               the video's frames (decoded from the upload once, or the uploaded images)
        annotations/NNNNN.png user masks by frame index (palette PNG, object ids)
        masks/<frame>.png     results, one palette PNG per frame, written as each frame is done
        objects.json          the object list: id (= label), name, display colour, hidden
        resume.pt             engine state after the last memory update (continues a stopped run exactly)
        exports/              the downloads (masks zip, overlay mp4, per-object zip)
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from PIL import Image

import rdevos
from rdevos import (DAVIS_PALETTE, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FolderSource, InputError, LabelMask,
                    ModelNotFoundError, RDEVOSError, VideoSource, as_label_mask, atomic_write, natural_sort_key,
                    read_mask, write_mask, write_object_masks)

logger = logging.getLogger(__name__)

__all__ = ["JobStatus", "JobInfo", "RunSettings", "Job", "WorkFolder", "JobManager", "Upload", "ACCEPTED_EXTENSIONS",
           "safe_name", "ObjectInfo", "SAMPLE_NAME", "plural"]

#: File types the upload accepts (checked by extension here and by content during the import).
ACCEPTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | {".zip"}))
_JOB_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)
_info_lock = threading.RLock()  # job.json is rewritten by the worker (progress) and the UI threads (submit/cancel)


class JobStatus(str, enum.Enum):
    READY = "ready"  #: imported, never run
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"  #: stopped by the user; Run continues it
    FAILED = "failed"
    INTERRUPTED = "interrupted"  #: the server stopped during the run; Run continues it


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
#: Display name of the sample-clip job (the sample button reopens it instead of copying the clip again).
SAMPLE_NAME = "sample-bear"
_MASK_ADVICE = ("upload a label map instead: a palette or greyscale PNG whose pixel values are object ids "
                "(0 = background, 1, 2, ... = objects), such as the masks this app downloads")


def plural(n: int, word: str) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ObjectInfo:
    """One entry of a job's object list (``objects.json``): label ``id`` in every mask, and how it is shown."""

    id: int
    name: str
    colour: str  #: ``#rrggbb``
    hidden: bool = False


@dataclass(frozen=True)
class RunSettings:
    """Model and inference settings of a run.

    Attributes:
        model: checkpoint path, registry name, URL or ModelScope id; ``None`` = the embedded default model.
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        resolution: short side frames are resized to for the network; ``None`` = native size.
    """

    model: str | None = None
    device: str = "auto"
    resolution: int | None = 480


@dataclass
class JobInfo:
    """Contents of ``job.json``: what the job is and how its last run went."""

    id: str
    name: str  #: display name (sanitised upload name)
    created: float
    num_frames: int
    height: int
    width: int
    fps: float  #: frame rate of the overlay video (the upload's, or 24 for images)
    status: JobStatus = JobStatus.READY
    message: str = ""
    done: int = 0  #: frames written by the current/last run
    total: int = 0  #: frames the current/last run will write
    frames_per_s: float = 0.0
    eta_s: float | None = None
    last_frame: int | None = None  #: index of the latest frame written (live preview)
    run: dict[str, Any] | None = None  #: the last run: start, direction, settings and signature
    updated: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobInfo:
        known = {f.name for f in fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        info.status = JobStatus(info.status)
        return info


@dataclass(frozen=True)
class Upload:
    """An uploaded file: where it lies on disk and the name the browser gave (never used as a path)."""

    path: Path
    name: str


def safe_name(name: str, default: str = "file") -> str:
    """The last path component of ``name`` with every character outside ``[A-Za-z0-9._-]`` replaced.

    The result cannot contain a separator or start with a dot, so it never leaves the folder it is joined to.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    out = _UNSAFE.sub("_", base).lstrip("._")[:120]
    return out or default


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


_ACCEPTED_TEXT = (f"upload a video ({', '.join(sorted(e.lstrip('.') for e in VIDEO_EXTENSIONS))}), a zip of frame "
                  f"images, or frame images ({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})")


class Job:
    """One uploaded video, its annotations and results, in ``WORK/jobs/<id>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = folder.name
        self._names: list[str] | None = None
        self._files: list[Path] | None = None

    # ------------------------------------------------------------------ paths
    @property
    def frames_dir(self) -> Path:
        return self.folder / "frames"

    @property
    def annotations_dir(self) -> Path:
        return self.folder / "annotations"

    @property
    def masks_dir(self) -> Path:
        return self.folder / "masks"

    @property
    def exports_dir(self) -> Path:
        return self.folder / "exports"

    @property
    def state_path(self) -> Path:
        return self.folder / "resume.pt"

    @property
    def info_path(self) -> Path:
        return self.folder / "job.json"

    # ------------------------------------------------------------------ info
    def info(self) -> JobInfo:
        """Read ``job.json``."""
        try:
            return JobInfo.from_dict(json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"job {self.id}: cannot read {self.info_path.name}: {e}") from e

    def save_info(self, info: JobInfo) -> None:
        """Write ``job.json`` atomically."""
        info.updated = time.time()
        with _info_lock, atomic_write(self.info_path) as fh:
            fh.write(json.dumps(info.to_dict(), indent=1).encode())

    def update(self, **changes: Any) -> JobInfo:
        """Change fields of ``job.json`` (read, modify, write under a lock) and return the new info."""
        with _info_lock:
            info = replace(self.info(), **changes)
            self.save_info(info)
            return info

    # ------------------------------------------------------------------ frames and masks
    def _source(self) -> FolderSource:
        return FolderSource(self.frames_dir)

    def _frame_files(self) -> list[Path]:
        if self._files is None:  # frames never change after the import
            src = self._source()
            self._names, self._files = src.names, src.files
        return self._files

    @property
    def frame_names(self) -> list[str]:
        """Frame names (file stems) in order; results are ``masks/<name>.png``."""
        return [p.stem for p in self._frame_files()]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3)`` uint8 RGB."""
        return FolderSource.from_files([self._frame_files()[index]]).get(0).image

    def result(self, index: int) -> np.ndarray | None:
        """Result label map ``(H, W)`` uint8 of frame ``index``, ``None`` if not segmented yet."""
        p = self.masks_dir / f"{self.frame_names[index]}.png"
        if not p.exists():
            return None
        try:
            return read_mask(p).labels
        except InputError:  # a file being replaced right now on some file systems
            return None

    def annotation(self, index: int) -> np.ndarray | None:
        """The user's label map ``(H, W)`` uint8 for frame ``index``, ``None`` if there is none."""
        p = self.annotations_dir / f"{index:05d}.png"
        return read_mask(p).labels if p.exists() else None

    def annotated_frames(self) -> list[int]:
        """Indices of frames with a user mask."""
        return sorted(int(p.stem) for p in self.annotations_dir.glob("*.png") if p.stem.isdigit())

    def annotation_summary(self) -> dict[int, list[int]]:
        """Frame index -> object ids of its user mask."""
        out: dict[int, list[int]] = {}
        for i in self.annotated_frames():
            labels = self.annotation(i)
            if labels is not None:
                out[i] = [int(v) for v in np.unique(labels) if v]
        return out

    def object_ids(self) -> list[int]:
        """All object ids the user annotated."""
        return sorted({i for ids in self.annotation_summary().values() for i in ids})

    def set_annotation(self, index: int, mask: LabelMask | np.ndarray | Image.Image | str | os.PathLike[str]
                       ) -> list[int]:
        """Store the user's mask for frame ``index`` (replacing an earlier one).

        Args:
            index: frame index.
            mask: ``(H, W)`` label map (array, PIL image or path) with object ids; 0 = background.
        Returns:
            The object ids in the mask.
        """
        info = self.info()
        if not 0 <= index < info.num_frames:
            raise InputError(f"frame {index} is outside the video (0..{info.num_frames - 1})")
        labels = as_label_mask(mask).labels
        if labels.shape != (info.height, info.width):
            raise InputError(f"the mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but the video frames are "
                             f"{info.width}x{info.height}; upload a mask of the frame size")
        ids = [int(v) for v in np.unique(labels) if v]
        if not ids:
            raise InputError(f"the mask for frame {index} has no object (every pixel is background)")
        write_mask(self.annotations_dir / f"{index:05d}.png", labels, DAVIS_PALETTE)
        return ids

    def remove_annotation(self, index: int) -> bool:
        """Delete the user mask of frame ``index``; returns whether there was one."""
        p = self.annotations_dir / f"{index:05d}.png"
        existed = p.exists()
        p.unlink(missing_ok=True)
        return existed

    def set_annotation_upload(self, index: int, path: str | os.PathLike[str], name: str) -> list[int]:
        """Store an uploaded mask file; refusals name the file as the user called it, with advice for the page.

        Raises:
            InputError: not a mask (an RGB photo, unreadable, wrong size, no object); the message has no server path.
        """
        shown = safe_name(name, "mask.png")
        try:
            labels = read_mask(path).labels
        except InputError as e:
            msg = str(e)
            for p in sorted({str(path), str(Path(path).resolve()), str(Path(path).parent)}, key=len, reverse=True):
                msg = msg.replace(f"'{p}'", f"'{shown}'").replace(p, shown)
            msg = re.sub(r"save it as a label map\b.*$", _MASK_ADVICE, msg, flags=re.S)  # the library's advice
            # any other library advice or path: keep it short
            if "rdevos.io" in msg or "PIL." in msg or re.search(r"(^|[\s'\"(])[/\\]", msg):
                msg = f"'{shown}' cannot be used as a mask; {_MASK_ADVICE}"
            logger.info("mask upload refused: %s", e)
            raise InputError(msg) from None
        return self.set_annotation(index, labels)

    def result_frames(self) -> set[int]:
        """Indices of frames that have a result."""
        index = {n: i for i, n in enumerate(self.frame_names)}
        return {index[p.stem] for p in self.masks_dir.glob("*.png") if p.stem in index}

    # ------------------------------------------------------------------ objects
    @property
    def objects_path(self) -> Path:
        return self.folder / "objects.json"

    def _read_objects(self) -> list[ObjectInfo]:
        try:
            raw = json.loads(self.objects_path.read_text())
            return [ObjectInfo(int(d["id"]), str(d["name"]), str(d["colour"]), bool(d.get("hidden", False)))
                    for d in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError) as e:
            logger.warning("job %s: ignoring a damaged %s: %s", self.id, self.objects_path.name, e)
            return []

    def _write_objects(self, objects: Sequence[ObjectInfo]) -> None:
        with atomic_write(self.objects_path) as fh:
            fh.write(json.dumps([asdict(o) for o in sorted(objects, key=lambda o: o.id)], indent=1).encode())

    @staticmethod
    def _free_colour(objects: Sequence[ObjectInfo]) -> tuple[str, str]:
        from rdevos_web.drawing import MIN_COLOUR_DISTANCE, colour_distance, palette_colour

        for i in range(256):
            name, colour = palette_colour(i)
            if all(colour_distance(colour, o.colour) >= MIN_COLOUR_DISTANCE for o in objects):
                return name, colour
        return palette_colour(len(objects))

    def objects(self) -> list[ObjectInfo]:
        """The object list, by id; objects found in the masks but not listed yet (uploaded masks) are added."""
        with _info_lock:
            objects = self._read_objects()
            known = {o.id for o in objects}
            missing = [i for i in self.object_ids() if i not in known]
            for i in missing:
                objects.append(ObjectInfo(i, f"object {i}", self._free_colour(objects)[1]))
            if missing:
                self._write_objects(objects)
            return sorted(objects, key=lambda o: o.id)

    def add_object(self, name: str | None = None) -> ObjectInfo:
        """A new object (id one above the largest so far) with a colour unlike the others'."""
        with _info_lock:
            objects = self.objects()
            obj_id = max((o.id for o in objects), default=0) + 1
            if obj_id > 255:
                raise InputError("a job can have at most 255 objects")
            colour_name, colour = self._free_colour(objects)
            obj = ObjectInfo(obj_id, (name or "").strip()[:60] or f"object {obj_id}", colour)
            self._write_objects([*objects, obj])
            logger.info("job %s: new object %d (%s, %s)", self.id, obj_id, obj.name, colour_name)
            return obj

    def update_object(self, obj_id: int, *, name: str | None = None, colour: str | None = None,
                      hidden: bool | None = None) -> ObjectInfo:
        """Rename, recolour, hide or show an object.

        Raises:
            InputError: no such object, an empty name, or a colour too close to another object's.
        """
        from rdevos_web.drawing import MIN_COLOUR_DISTANCE, colour_distance, hex_to_rgb

        with _info_lock:
            objects = self.objects()
            obj = next((o for o in objects if o.id == obj_id), None)
            if obj is None:
                raise InputError(f"there is no object {obj_id}")
            if name is not None:
                if not name.strip():
                    raise InputError("an object's name cannot be empty")
                obj.name = name.strip()[:60]
            if colour is not None:
                try:
                    rgb = hex_to_rgb(colour)
                except ValueError:
                    raise InputError(f"{colour!r} is not a colour") from None
                colour = "#{:02x}{:02x}{:02x}".format(*rgb)
                for o in objects:
                    if o.id != obj_id and colour_distance(colour, o.colour) < MIN_COLOUR_DISTANCE:
                        raise InputError(f"that colour is too close to the colour of '{o.name}'; pick one that "
                                         "tells them apart")
                if colour_distance(colour, "#000000") < MIN_COLOUR_DISTANCE / 2:
                    raise InputError("that colour is too close to black; pick a brighter one")
                obj.colour = colour
            if hidden is not None:
                obj.hidden = bool(hidden)
            self._write_objects(objects)
            return obj

    def delete_object(self, obj_id: int) -> int:
        """Remove an object from the list, from every user mask and from the results; returns the masks changed.

        User masks left without any object are removed.
        """
        from rdevos import write_mask

        changed = 0
        with _info_lock:
            self._write_objects([o for o in self.objects() if o.id != obj_id])
        for i in self.annotated_frames():
            labels = self.annotation(i)
            if labels is None or not (labels == obj_id).any():
                continue
            labels = np.where(labels == obj_id, 0, labels).astype(np.uint8)
            if labels.any():
                write_mask(self.annotations_dir / f"{i:05d}.png", labels, DAVIS_PALETTE)
            else:
                self.remove_annotation(i)
            changed += 1
        for p in self.masks_dir.glob("*.png"):
            try:
                labels = read_mask(p).labels
            except InputError:
                continue
            if (labels == obj_id).any():
                write_mask(p, np.where(labels == obj_id, 0, labels).astype(np.uint8), DAVIS_PALETTE)
                changed += 1
        logger.info("job %s: deleted object %d (%d masks changed)", self.id, obj_id, changed)
        return changed

    # ------------------------------------------------------------------ exports
    def _export_stem(self) -> str:
        return safe_name(Path(self.info().name).stem, self.id)

    def export_masks_zip(self) -> Path:
        """Zip of one palette PNG per frame (frames not segmented yet get an empty mask)."""
        info = self.info()
        buf = io.BytesIO()
        im = Image.fromarray(np.zeros((info.height, info.width), np.uint8))
        im.putpalette(list(DAVIS_PALETTE))
        im.save(buf, format="PNG")
        empty = buf.getvalue()
        dest = self.exports_dir / f"{self._export_stem()}_masks.zip"
        with atomic_write(dest) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for name in self.frame_names:
                p = self.masks_dir / f"{name}.png"
                zf.writestr(f"{name}.png", p.read_bytes() if p.exists() else empty)
        return dest

    def export_overlay(self) -> Path:
        """H.264 mp4 of the frames with the result masks drawn over them."""
        from rdevos import OverlayWriter

        info = self.info()
        dest = self.exports_dir / f"{self._export_stem()}_overlay.mp4"
        src = self._source()
        with OverlayWriter(dest, info.fps or 24.0, (info.height, info.width), DAVIS_PALETTE) as wr:
            for fr in src:
                wr.write(fr.image, self.result(fr.index))
        return dest

    def export_objects_zip(self) -> Path:
        """Zip of ``<object id>/<frame>.png`` binary masks (0/255), one per object and frame."""
        ids = sorted(set(self.object_ids()) | self._result_ids())
        tmp = self.exports_dir / "objects"
        shutil.rmtree(tmp, ignore_errors=True)
        info = self.info()
        for i, name in enumerate(self.frame_names):
            labels = self.result(i)
            write_object_masks(tmp, name, labels if labels is not None else
                                        np.zeros((info.height, info.width), np.uint8), ids)
        dest = self.exports_dir / f"{self._export_stem()}_objects.zip"
        with atomic_write(dest) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for oid in ids:
                for p in sorted((tmp / str(oid)).glob("*.png"), key=lambda q: natural_sort_key(q.name)):
                    zf.write(p, f"{oid}/{p.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def _result_ids(self) -> set[int]:
        ids: set[int] = set()
        for i in range(len(self.frame_names)):
            labels = self.result(i)
            if labels is not None:
                ids |= {int(v) for v in np.unique(labels) if v}
        return ids


class WorkFolder:
    """The folder that holds every job; validates and imports uploads.

    Args:
        root: the work folder (created if missing).
        max_upload_bytes: largest accepted upload (each file, and all files of one upload together).
        max_frames: most frames a job may have.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_upload_bytes: int = 500 * 2**20,
                 max_frames: int = 10_000) -> None:
        self.root = Path(root).resolve()
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_frames = int(max_frames)
        self._lock_fh: IO[str] | None = None

    # ------------------------------------------------------------------ single server
    def acquire_lock(self) -> None:
        """Take ``.server.lock`` so that two servers never run jobs from the same folder.

        Raises:
            RDEVOSError: another process holds the lock.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fh = open(self.root / ".server.lock", "a+")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise RDEVOSError(f"another rdevos server is using the work folder {self.root}; stop it or choose "
                              "another folder (--work-dir)") from None
        self._lock_fh = fh

    def release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # ------------------------------------------------------------------ jobs
    def job(self, job_id: str) -> Job:
        """The job with this id.

        Raises:
            InputError: malformed id (ids never reach the file system unchecked) or no such job.
        """
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise InputError(f"no job {job_id!r}")
        folder = self.jobs_dir / job_id
        if not (folder / "job.json").is_file():
            raise InputError(f"job {job_id} does not exist in {self.jobs_dir}")
        return Job(folder)

    def jobs(self) -> list[Job]:
        """All complete jobs, newest first."""
        out = [Job(p) for p in self.jobs_dir.iterdir() if _JOB_ID.match(p.name) and (p / "job.json").is_file()]
        return sorted(out, key=lambda j: j.id, reverse=True)

    def _new_id(self) -> str:
        while True:
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            if not (self.jobs_dir / job_id).exists():
                return job_id

    @contextlib.contextmanager
    def _staging(self) -> Iterator[tuple[str, Path]]:
        """A hidden folder the import fills; renamed into ``jobs/`` only when the import succeeded."""
        job_id = self._new_id()
        tmp = self.jobs_dir / f".incoming-{job_id}"
        tmp.mkdir()
        try:
            yield job_id, tmp
            os.replace(tmp, self.jobs_dir / job_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def create_job(self, uploads: Sequence[Upload]) -> Job:
        """Import an upload as a new job: one video, one zip of frames, or several frame images.

        Raises:
            InputError: with a message for the user (wrong type, unreadable content, too large, unsafe zip).
        """
        uploads = list(uploads)
        if not uploads:
            raise InputError(f"no file was uploaded; {_ACCEPTED_TEXT}")
        total = 0
        for up in uploads:
            size = up.path.stat().st_size
            total += size
            if size > self.max_upload_bytes or total > self.max_upload_bytes:
                what = size if size > self.max_upload_bytes else total
                raise InputError(f"'{safe_name(up.name)}' is too large ({_fmt_bytes(what)}); "
                                 f"the upload limit is {_fmt_bytes(self.max_upload_bytes)}")
        kinds = {self._kind(up) for up in uploads}
        if len(uploads) > 1 and kinds != {"image"}:
            raise InputError("upload one video, one zip of frames, or several frame images (not a mix)")
        kind = kinds.pop()
        with self._staging() as (job_id, tmp):
            frames = tmp / "frames"
            frames.mkdir()
            fps = 24.0
            if kind == "video":
                fps = self._import_video(uploads[0], frames)
                name = safe_name(uploads[0].name, "video")
            elif kind == "zip":
                self._import_zip(uploads[0], frames)
                name = safe_name(uploads[0].name, "frames.zip")
            else:
                self._import_images(uploads, frames)
                name = safe_name(uploads[0].name, "image") if len(uploads) == 1 else f"{len(uploads)} images"
            info = self._check_frames(job_id, name, frames, fps)
            Job(tmp).save_info(info)
        logger.info("new job %s: %s, %d frames of %dx%d", job_id, name, info.num_frames, info.width, info.height)
        return Job(self.jobs_dir / job_id)

    def create_sample_job(self) -> Job:
        """A job with the bundled sample clip (DAVIS ``bear``) and its first-frame mask."""
        from rdevos import sample_clip_dir, sample_mask_path

        with self._staging() as (job_id, tmp):
            frames = tmp / "frames"
            frames.mkdir()
            for f in sorted(sample_clip_dir().iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    shutil.copyfile(f, frames / f.name)
            info = self._check_frames(job_id, SAMPLE_NAME, frames, 24.0)
            Job(tmp).save_info(info)
            Job(tmp).set_annotation(0, read_mask(sample_mask_path()).labels)
        return Job(self.jobs_dir / job_id)

    def open_sample_job(self) -> tuple[Job, bool]:
        """The sample-clip job: the existing one if there is one (``True``), else a new one (``False``)."""
        for job in self.jobs():
            try:
                if job.info().name == SAMPLE_NAME:
                    return job, True
            except InputError:
                continue
        return self.create_sample_job(), False

    def delete_job(self, job_id: str) -> None:
        """Delete a job's folder (renamed away first, so that a half-deleted job is never listed).

        Use :meth:`JobManager.delete`, which refuses while the job runs.
        """
        job = self.job(job_id)
        trash = self.jobs_dir / f".deleted-{job.id}"
        os.replace(job.folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("deleted job %s", job.id)

    # ------------------------------------------------------------------ import helpers
    @staticmethod
    def _kind(up: Upload) -> str:
        ext = PurePosixPath(safe_name(up.name)).suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            return "video"
        if ext == ".zip":
            return "zip"
        if ext in IMAGE_EXTENSIONS:
            return "image"
        raise InputError(f"'{safe_name(up.name)}' is not an accepted file type; {_ACCEPTED_TEXT}")

    def _import_video(self, up: Upload, frames: Path) -> float:
        display = safe_name(up.name)
        try:
            src = VideoSource(up.path)
            fps = src.fps or 24.0
            n = 0
            for fr in src:
                if fr.index >= self.max_frames:
                    raise InputError(f"'{display}' has more than {self.max_frames} frames, the limit of this "
                                     "server (--max-frames)")
                Image.fromarray(fr.image).save(frames / f"{fr.index:05d}.jpg", quality=95)
                n += 1
        except InputError as e:
            if "limit of this server" in str(e):
                raise
            logger.info("upload %s is not a readable video: %s", display, e)
            raise InputError(f"'{display}' is not a readable video file: its content could not be decoded as "
                             f"video; {_ACCEPTED_TEXT}") from None
        if n == 0:
            raise InputError(f"'{display}' contains no video frame")
        return float(fps)

    def _import_zip(self, up: Upload, frames: Path) -> None:
        display = safe_name(up.name)
        if not zipfile.is_zipfile(up.path):
            raise InputError(f"'{display}' is not a zip archive; {_ACCEPTED_TEXT}")
        try:
            with zipfile.ZipFile(up.path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                for m in members:
                    p = PurePosixPath(m.filename.replace("\\", "/"))
                    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", m.filename):
                        raise InputError(f"'{display}' contains the entry '{m.filename}', whose path points outside "
                                         "the archive; refused (nothing was extracted)")
                images = [m for m in members
                          if PurePosixPath(m.filename).suffix.lower() in IMAGE_EXTENSIONS
                          and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(m.filename).parts)]
                if not images:
                    raise InputError(f"'{display}' contains no frame images "
                                     f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})")
                if len(images) > self.max_frames:
                    raise InputError(f"'{display}' has {len(images)} frames, more than the limit of this server "
                                     f"({self.max_frames}, --max-frames)")
                unpacked = sum(m.file_size for m in images)
                if unpacked > 4 * self.max_upload_bytes:
                    raise InputError(f"'{display}' unpacks to {_fmt_bytes(unpacked)}, more than 4x the upload limit")
                items = [(PurePosixPath(m.filename).name, m) for m in images]
                for name, m in items:
                    self._store_image(name, zf.read(m), frames, f"'{display}' entry '{m.filename}'")
        except zipfile.BadZipFile as e:
            raise InputError(f"'{display}' is a damaged zip archive: {e}") from None

    def _import_images(self, uploads: Sequence[Upload], frames: Path) -> None:
        if len(uploads) > self.max_frames:
            raise InputError(f"{len(uploads)} images is more than the limit of this server ({self.max_frames})")
        for up in uploads:
            self._store_image(up.name, up.path.read_bytes(), frames, f"'{safe_name(up.name)}'")

    @staticmethod
    def _store_image(name: str, data: bytes, frames: Path, what: str) -> None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except _PIL_ERRORS as e:
            raise InputError(f"{what} is not a readable image ({e})") from None
        stem, ext = os.path.splitext(safe_name(name, "frame.png"))
        dest = frames / f"{stem}{ext.lower()}"
        if any(p.stem == stem for p in frames.iterdir()):
            raise InputError(f"{what}: two frames are named '{stem}'; frame names must be unique")
        dest.write_bytes(data)

    def _check_frames(self, job_id: str, name: str, frames: Path, fps: float) -> JobInfo:
        src = FolderSource(frames)
        h, w = src.size
        for f in src.files:  # headers only: same size everywhere, so a run never stops half-way on a bad frame
            with Image.open(f) as im:
                if im.size != (w, h):
                    raise InputError(f"frame '{f.name}' is {im.size[0]}x{im.size[1]} but the first frame is {w}x{h}; "
                                     "all frames must have the same size")
        src.get(0)
        return JobInfo(id=job_id, name=name, created=time.time(), num_frames=src.num_frames, height=h, width=w,
                       fps=float(fps))


def _run_total(direction: str, start: int | None, annotations: dict[int, list[int]], n: int) -> int:
    """How many results a run gives (for progress and ETA): :func:`rdevos.plan_propagation`'s rule."""
    return rdevos.plan_propagation(annotations, n, direction, start).total or 0


def _signature(job: Job, settings: RunSettings, direction: str, start: int | None) -> str:
    h = hashlib.sha256(json.dumps([asdict(settings), direction, start]).encode())
    for i in job.annotated_frames():
        h.update(str(i).encode())
        h.update((job.annotations_dir / f"{i:05d}.png").read_bytes())
    return h.hexdigest()


class JobManager:
    """Runs segmentation jobs in one background thread, one job at a time, in submission order.

    All state is in the work folder: a page reload, or a new server on the same folder, sees every job. Jobs left
    queued or running by a server that stopped are marked ``interrupted``; :meth:`submit` continues them exactly
    from their last memory update.

    Args:
        work: the work folder.
        settings: default model/device/resolution of runs.
    """

    def __init__(self, work: WorkFolder, settings: RunSettings | None = None) -> None:
        self.work = work
        self.settings = settings or RunSettings()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._models: dict[tuple[str | None, str], Any] = {}
        self._active: str | None = None
        self._stopping = False
        self.recover()

    def recover(self) -> list[str]:
        """Mark jobs that a stopped server left queued or running as interrupted; returns their ids."""
        out = []
        for job in self.work.jobs():
            try:
                info = job.info()
            except InputError as e:
                logger.warning("%s", e)
                continue
            if info.status in ACTIVE and job.id not in self._cancel:
                job.update(status=JobStatus.INTERRUPTED, eta_s=None,
                           message="the server stopped during this run; press Run to continue it")
                out.append(job.id)
        if out:
            logger.info("jobs interrupted by a server stop: %s", ", ".join(out))
        return out

    def is_active(self, job_id: str) -> bool:
        """Whether the job is queued or running in this process."""
        with self._lock:
            return job_id in self._cancel

    def submit(self, job_id: str, *, direction: str = "forward", start: int | None = None,
               settings: RunSettings | None = None) -> JobInfo:
        """Queue a run of a job.

        Args:
            job_id: the job.
            direction: ``forward``, ``backward`` or ``both`` (see :meth:`VideoSession.propagate`).
            start: start at this annotated frame instead of the first (forward) / last (backward) annotation;
                used to propagate a correction from the frame where it was drawn.
            settings: model/device/resolution (default: the manager's).
        Returns:
            The job's info (status ``queued``).
        Raises:
            InputError: no annotation, the start frame has no mask, or the job is already queued/running.
        """
        job = self.work.job(job_id)
        direction = rdevos.Direction(direction).value
        settings = settings or self.settings
        annotated = job.annotated_frames()
        if not annotated:
            raise InputError("draw or upload a mask on at least one frame before running")
        if start is not None and start not in annotated:
            raise InputError(f"frame {start} has no mask: mark the object on it (box, clicks or brush) to "
                             "propagate from there, or start from the first mask")
        with self._lock:
            if job_id in self._cancel:
                raise InputError("this job is already queued or running; cancel it first")
            info = job.info()
            sig = _signature(job, settings, direction, start)
            resumable = (info.run is not None and info.run.get("signature") == sig and job.state_path.exists()
                         and info.status in (JobStatus.CANCELLED, JobStatus.INTERRUPTED, JobStatus.FAILED))
            if not resumable:
                job.state_path.unlink(missing_ok=True)
            run = {"direction": direction, "start": start, "signature": sig, "resume": resumable,
                   **asdict(settings)}
            waiting = bool(self._cancel)  # other jobs queued or running
            info = job.update(status=JobStatus.QUEUED, run=run, eta_s=None, frames_per_s=0.0,
                              done=info.done if resumable else 0,
                              total=_run_total(direction, start, job.annotation_summary(), info.num_frames),
                              message="waiting for the job before it" if waiting else "starting")
            self._cancel[job_id] = threading.Event()
            self._queue.put(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="rdevos-web-jobs", daemon=True)
                self._thread.start()
        return info

    def cancel(self, job_id: str) -> JobInfo:
        """Stop a queued or running job after the frame in progress; its results so far are kept."""
        job = self.work.job(job_id)
        with self._lock:
            ev = self._cancel.get(job_id)
            if ev is None:
                return job.info()
            ev.set()
            if self._active != job_id:
                return job.update(status=JobStatus.CANCELLED, eta_s=None, message="cancelled before it started")
        return job.update(message="cancelling after the current frame")

    def delete(self, job_id: str) -> None:
        """Delete a job and its files.

        Raises:
            InputError: the job is queued or running (cancel it first), or does not exist.
        """
        with self._lock:
            if job_id in self._cancel:
                raise InputError("this job is queued or running: cancel it before deleting it")
            self.work.delete_job(job_id)

    def wait(self, job_id: str, timeout: float = 60.0) -> JobInfo:
        """Block until the job is no longer queued or running (for scripts and tests)."""
        t_end = time.monotonic() + timeout
        while self.is_active(job_id):
            if time.monotonic() > t_end:
                raise TimeoutError(f"job {job_id} still running after {timeout} s")
            time.sleep(0.05)
        return self.work.job(job_id).info()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the running job after its current frame (it is marked interrupted: Run continues it) and the worker."""
        with self._lock:
            self._stopping = True
            for ev in self._cancel.values():
                ev.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _worker(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                ev = self._cancel.get(job_id)
                if ev is None or ev.is_set():
                    self._cancel.pop(job_id, None)
                    continue
                self._active = job_id
            try:
                self._run(self.work.job(job_id), ev)
            except Exception:  # noqa: BLE001 - keep the worker alive; _run records failures itself
                logger.exception("job %s: unexpected error", job_id)
            finally:
                with self._lock:
                    self._active = None
                    self._cancel.pop(job_id, None)

    def _model(self, settings: RunSettings, device: Any) -> Any:
        from rdevos import load_model

        key = (settings.model, str(device))
        if key not in self._models:
            self._models.clear()  # keep one network in memory
            logger.info("loading model %s on %s", settings.model or "(embedded default)", device)
            self._models[key] = load_model(settings.model, device=device)
        return self._models[key]

    def _write_result(self, job: Job, name: str, labels: np.ndarray) -> None:
        write_mask(job.masks_dir / f"{name}.png", labels, DAVIS_PALETTE)

    def _run(self, job: Job, cancel: threading.Event) -> None:
        info = job.info()
        run = dict(info.run or {})
        settings = RunSettings(model=run.get("model"), device=run.get("device", "auto"),
                               resolution=run.get("resolution"))
        job.update(status=JobStatus.RUNNING, message="loading the model", last_frame=None)
        try:
            device = rdevos.resolve_device(settings.device)
            try:
                model = self._model(settings, device)
            except ModelNotFoundError as e:
                raise ModelNotFoundError(f"{e} In the app: enter the checkpoint's path under 'Model'.") from None
            config = rdevos.InferenceConfig.for_model(model.inference_defaults,
                                                      precision=rdevos.default_precision(device),
                                                      resolution=settings.resolution)
            session = rdevos.VideoSession(model, rdevos.FolderSource(job.frames_dir), config, device=device)
            for idx in job.annotated_frames():
                session.add_mask(idx, job.annotation(idx))
            folder = rdevos.RunFolder(job.masks_dir, state_path=job.state_path)
            if not run.get("resume"):
                folder.clear(outputs=False)  # a new run: rewrite the frames it reaches, keep the others
            job.update(message="", total=session.plan(run["direction"], run.get("start")).total)
            t0 = time.perf_counter()
            clock = {"n": 0, "last_save": 0.0, "last": info.last_frame}

            def on_frame(p: rdevos.RunProgress) -> None:
                clock["n"] += 1
                clock["last"] = p.frame.index
                now = time.perf_counter()
                if now - clock["last_save"] >= 0.25 and not cancel.is_set():
                    fps = clock["n"] / max(now - t0, 1e-9)
                    job.update(done=p.done, total=p.total, last_frame=p.frame.index, frames_per_s=fps,
                               eta_s=max((p.total or 0) - p.done, 0) / fps if fps > 0 else None)
                    clock["last_save"] = now

            res = rdevos.segment_to_folder(
                session, folder, signature=run["signature"], direction=run["direction"], start=run.get("start"),
                replace=True, info={"job": job.id}, on_frame=on_frame, should_stop=cancel.is_set,
                writer=lambda fr, _path: self._write_result(job, fr.name, fr.labels))
            if res.stopped:
                stopped = self._stopping
                job.update(status=JobStatus.INTERRUPTED if stopped else JobStatus.CANCELLED, done=res.done,
                           last_frame=clock["last"], eta_s=None,
                           message=f"the server stopped after {res.done} frames; press Run to continue" if stopped
                           else "press Run to continue")
                logger.info("job %s %s after %d frames", job.id, "stopped" if stopped else "cancelled", res.done)
                return
            dt = res.seconds
            fps = res.frames / max(dt, 1e-9)
            job.update(status=JobStatus.DONE, done=res.done, total=res.total or res.done, frames_per_s=fps, eta_s=0.0,
                       last_frame=clock["last"],
                       message=f"segmented {res.frames} frames in {dt:.1f} s ({fps:.2f} frames/s)")
            logger.info("job %s done: %d frames in %.1f s", job.id, res.frames, dt)
        except RDEVOSError as e:
            logger.warning("job %s failed: %s", job.id, e)
            job.update(status=JobStatus.FAILED, eta_s=None, message=str(e))
        except Exception as e:  # noqa: BLE001 - shown to the user, traceback in the server log
            logger.exception("job %s failed", job.id)
            job.update(status=JobStatus.FAILED, eta_s=None,
                       message=f"internal error: {type(e).__name__}: {e} (details in the server log)")
