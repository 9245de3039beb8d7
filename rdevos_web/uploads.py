"""The work folder: the jobs in it, one server per folder, and importing uploads (a video, a zip of frames, frame
images, the sample clip) as new jobs.

Work folder layout (everything the app writes stays under it)::

    WORK/
      .server.lock            held by the one server that uses the folder
      .gradio/                Gradio's upload cache (``rdevos serve`` points GRADIO_TEMP_DIR here)
      jobs/<job id>/
        job.json              the job record (:mod:`rdevos_web.store`): status, objects, settings, version
        frames/               the video's frames (decoded from the upload once, or the uploaded images)
        annotations/NNNNN.png user masks by frame index (palette PNG, object ids)
        masks/<frame>.png     results, one palette PNG per frame, written as each frame is done
        run/                  the masks the last run started from (:mod:`rdevos_web.runner`)
        resume.pt             engine state after the last memory update (continues a stopped run exactly)
        exports/v<version>/   the downloads (:mod:`rdevos_web.exports`)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import Image

from rdevos import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FolderSource, InputError, RDEVOSError, VideoSource, read_mask
from rdevos.io.frames import upright_size
from rdevos_web.store import Job, JobInfo, safe_name

logger = logging.getLogger(__name__)

__all__ = ["WorkFolder", "Upload", "ACCEPTED_EXTENSIONS", "SAMPLE_NAME"]

#: File types the upload accepts (checked by extension here and by content during the import).
ACCEPTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | {".zip"}))
#: Display name of the sample-clip job (the sample button reopens it instead of copying the clip again).
SAMPLE_NAME = "sample-bear"
_JOB_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)
_ACCEPTED_TEXT = (f"upload a video ({', '.join(sorted(e.lstrip('.') for e in VIDEO_EXTENSIONS))}), a zip of frame "
                  f"images, or frame images ({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})")


@dataclass(frozen=True)
class Upload:
    """An uploaded file: where it lies on disk and the name the browser gave (never used as a path)."""

    path: Path
    name: str


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


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
            staged = Job(tmp)
            staged.set_annotation(0, read_mask(sample_mask_path()).labels)
            staged.forget_history()
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
                fh, fw = upright_size(im)  # as FolderSource reads it: EXIF orientation applied
            if (fh, fw) != (h, w):
                raise InputError(f"frame '{f.name}' is {fw}x{fh} but the first frame is {w}x{h}; "
                                 "all frames must have the same size")
        src.get(0)
        return JobInfo(id=job_id, name=name, created=time.time(), num_frames=src.num_frames, height=h, width=w,
                       fps=float(fps), objects=[], masks={})
