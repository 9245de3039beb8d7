"""The job store: one server-side record per job, the single source of truth of everything the page shows.

A job's record is ``job.json`` (:class:`JobInfo`): status and progress of its runs, its object list, its run
settings, which objects each user mask annotates, and the downloads prepared for it. Its ``version`` goes up with
every edit (a mask, an object, a setting, a run submitted or finished), so a page can tell that what it shows is
out of date (another tab changed it, downloads or results are stale) by comparing one number. Every change goes
through :class:`Job`, under one lock, and is refused while a run of the job is queued or running if it would make
the run's results disagree with the masks.

User masks (``annotations/NNNNN.png``) annotate *some* objects on a frame (the ids listed in the record): a box
drawn on a frame that shows a run's result changes that object only; the other objects keep their result there,
and the run goes on predicting them (see :func:`compose`). An id listed with no pixel says the object is absent.

Mask edits made through :meth:`Job.edit_object_mask`, :meth:`Job.set_annotation` and :meth:`Job.remove_annotation`
can be undone and redone (:meth:`Job.undo`, :meth:`Job.redo`); the history is kept in memory by the server.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rdevos import (DAVIS_PALETTE, FolderSource, InputError, LabelMask, as_label_mask, read_mask, write_mask)

logger = logging.getLogger(__name__)

__all__ = ["JobStatus", "ACTIVE", "JobInfo", "ObjectInfo", "RunSettings", "JobSettings", "Job", "compose",
           "plural", "safe_name", "RECORD_LOCK", "DIRECTIONS", "START_MODES", "RUN_IN_PROGRESS", "HISTORY_LIMIT"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: One lock for every job record of this process: read-modify-write of ``job.json`` and the mask files with it.
RECORD_LOCK = threading.RLock()
#: Directions and start choices of a run (the page's radio buttons).
DIRECTIONS = ("forward", "backward", "both")
START_MODES = ("first mask", "this frame")
#: Mask edits kept for undo, per job.
HISTORY_LIMIT = 100
RUN_IN_PROGRESS = "a run of this job is in progress: wait for it or cancel it before changing masks"
_MASK_ADVICE = ("upload a label map instead: a palette or greyscale PNG whose pixel values are object ids "
                "(0 = background, 1, 2, ... = objects), such as the masks this app downloads")


class JobStatus(str, enum.Enum):
    READY = "ready"  #: imported, never run
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"  #: stopped by the user; Run continues it
    FAILED = "failed"
    INTERRUPTED = "interrupted"  #: the server stopped during the run; Run continues it


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


def plural(n: int, word: str) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def safe_name(name: str, default: str = "file") -> str:
    """The last path component of ``name`` with every character outside ``[A-Za-z0-9._-]`` replaced.

    The result cannot contain a separator or start with a dot, so it never leaves the folder it is joined to.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    out = _UNSAFE.sub("_", base).lstrip("._")[:120]
    return out or default


@dataclass
class ObjectInfo:
    """One entry of a job's object list: label ``id`` in every mask, and how it is shown."""

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


@dataclass(frozen=True)
class JobSettings:
    """A job's run settings as the page's controls show them; they belong to the job (restored with it).

    Attributes:
        direction: one of :data:`DIRECTIONS`.
        start: one of :data:`START_MODES` (``this frame``: the frame shown when Run is pressed).
        model, device, resolution: as :class:`RunSettings`.
    """

    direction: str = "forward"
    start: str = "first mask"
    model: str | None = None
    device: str = "auto"
    resolution: int | None = 480

    @property
    def run(self) -> RunSettings:
        return RunSettings(model=self.model, device=self.device, resolution=self.resolution)

    @classmethod
    def of(cls, run: RunSettings) -> JobSettings:
        return cls(model=run.model, device=run.device, resolution=run.resolution)

    def merged(self, stored: dict[str, Any] | None) -> JobSettings:
        """These settings with the valid entries of a stored dict over them."""
        known = {f.name for f in fields(self)}
        try:
            return self.checked(**{k: v for k, v in (stored or {}).items() if k in known})
        except InputError as e:
            logger.warning("ignoring stored run settings %s: %s", stored, e)
            return self

    def checked(self, **changes: Any) -> JobSettings:
        """A copy with ``changes``, each checked.

        Raises:
            InputError: an unknown direction or start, a resolution that is not a positive number.
        """
        new = replace(self, **changes)
        if new.direction not in DIRECTIONS:
            raise InputError(f"direction {new.direction!r} is not one of {', '.join(DIRECTIONS)}")
        if new.start not in START_MODES:
            raise InputError(f"start {new.start!r} is not one of {', '.join(START_MODES)}")
        if new.resolution is not None and (not isinstance(new.resolution, int) or new.resolution < 16):
            raise InputError(f"processing size {new.resolution!r} is not a number of pixels (16 or more)")
        model = (new.model or "").strip() or None
        return replace(new, model=model, device=str(new.device or "auto"))


@dataclass
class JobInfo:
    """The job record (``job.json``): what the job is, its state, and how its last run went."""

    id: str
    name: str  #: display name (sanitised upload name)
    created: float
    num_frames: int
    height: int
    width: int
    fps: float  #: frame rate of the video (the upload's, or 24 for images): playback and the overlay video
    status: JobStatus = JobStatus.READY
    message: str = ""
    done: int = 0  #: frames written by the current/last run
    total: int = 0  #: frames the current/last run will write
    frames_per_s: float = 0.0
    eta_s: float | None = None
    last_frame: int | None = None  #: index of the latest frame written (live preview)
    run: dict[str, Any] | None = None  #: the last run: start, direction, settings, signature, mask_version
    updated: float = field(default_factory=time.time)
    version: int = 0  #: goes up with every edit (masks, objects, settings, runs submitted and finished)
    mask_version: int = 0  #: the version of the last change of a user mask (results older than it are stale)
    objects: list[dict[str, Any]] | None = None  #: the object list (:class:`ObjectInfo` fields)
    masks: dict[str, list[int]] | None = None  #: frame index -> object ids its user mask annotates
    settings: dict[str, Any] | None = None  #: :class:`JobSettings` fields
    exports: dict[str, Any] | None = None  #: downloads prepared: version, files

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

    @property
    def object_list(self) -> list[ObjectInfo]:
        return [ObjectInfo(int(d["id"]), str(d["name"]), str(d["colour"]), bool(d.get("hidden", False)))
                for d in (self.objects or [])]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def results_stale(self) -> bool:
        """Whether user masks changed after the last run was submitted (its results do not reflect them)."""
        run = self.run or {}
        return "mask_version" in run and self.mask_version != run["mask_version"]


def compose(result: np.ndarray | None, annotation: np.ndarray | None, ids: Sequence[int]) -> np.ndarray | None:
    """What a frame shows: the run's result, with the objects ``ids`` of the user mask taken from the user mask."""
    if annotation is None:
        return result
    ann = np.where(np.isin(annotation, list(ids)), annotation, 0).astype(np.uint8)
    if result is None:
        return ann
    out = np.where(np.isin(result, list(ids)), 0, result).astype(np.uint8)
    out[ann > 0] = ann[ann > 0]
    return out


# ---------------------------------------------------------------------------------------------------- history
_FrameState = tuple[bytes, tuple[int, int], tuple[int, ...]] | None  # zlib labels, shape, ids; None = no mask


@dataclass
class _Edit:
    frame: int
    before: _FrameState
    after: _FrameState
    what: str


@dataclass
class _History:
    undo: list[_Edit] = field(default_factory=list)
    redo: list[_Edit] = field(default_factory=list)


_HISTORIES: dict[Path, _History] = {}


def _pack(labels: np.ndarray | None, ids: Sequence[int]) -> _FrameState:
    if labels is None:
        return None
    return zlib.compress(np.ascontiguousarray(labels, np.uint8).tobytes(), 1), labels.shape[:2], tuple(ids)


def _unpack(state: _FrameState) -> tuple[np.ndarray, list[int]] | None:
    if state is None:
        return None
    data, shape, ids = state
    return np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape).copy(), list(ids)


# ---------------------------------------------------------------------------------------------------- job
class Job:
    """One uploaded video, its record, user masks and results, in ``WORK/jobs/<id>``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = folder.name
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
    def run_dir(self) -> Path:
        """What a run needs besides the masks: the start-frame masks it was given (see :mod:`rdevos_web.runner`)."""
        return self.folder / "run"

    @property
    def state_path(self) -> Path:
        return self.folder / "resume.pt"

    @property
    def info_path(self) -> Path:
        return self.folder / "job.json"

    @property
    def objects_path(self) -> Path:
        """The object list of jobs made before it moved into ``job.json`` (read once, then removed)."""
        return self.folder / "objects.json"

    def _ann_path(self, index: int) -> Path:
        return self.annotations_dir / f"{index:05d}.png"

    # ------------------------------------------------------------------ record
    def info(self) -> JobInfo:
        """Read the record (``job.json``); a record of an older version of the app is upgraded once."""
        try:
            info = JobInfo.from_dict(json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"job {self.id}: cannot read {self.info_path.name}: {e}") from e
        if info.objects is None or info.masks is None:
            with RECORD_LOCK:
                info = self._upgrade()
        return info

    def _upgrade(self) -> JobInfo:
        info = JobInfo.from_dict(json.loads(self.info_path.read_text()))
        if info.objects is not None and info.masks is not None:
            return info
        masks: dict[str, list[int]] = {}
        for i in self._annotation_files():
            labels = self.annotation(i)
            if labels is not None:
                masks[str(i)] = [int(v) for v in np.unique(labels) if v]
        objects = []
        try:
            objects = [asdict(ObjectInfo(int(d["id"]), str(d["name"]), str(d["colour"]), bool(d.get("hidden"))))
                       for d in json.loads(self.objects_path.read_text())]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError) as e:
            logger.warning("job %s: ignoring a damaged %s: %s", self.id, self.objects_path.name, e)
        info.masks = masks if info.masks is None else info.masks
        info.objects = objects if info.objects is None else info.objects
        info.objects = [asdict(o) for o in _with_objects(info.object_list, _all_ids(info.masks))]
        self.save_info(info)
        self.objects_path.unlink(missing_ok=True)  # moved into job.json
        return info

    def save_info(self, info: JobInfo) -> None:
        """Write the record atomically."""
        from rdevos import atomic_write

        info.updated = time.time()
        with RECORD_LOCK, atomic_write(self.info_path) as fh:
            fh.write(json.dumps(info.to_dict(), indent=1).encode())

    def update(self, **changes: Any) -> JobInfo:
        """Change fields of the record without an edit (run progress): read, modify, write under the lock."""
        with RECORD_LOCK:
            info = replace(self.info(), **changes)
            self.save_info(info)
            return info

    def edit(self, *, masks_changed: bool = False, **changes: Any) -> JobInfo:
        """Change fields of the record as an edit: the version goes up (and the mask version, for a mask edit)."""
        with RECORD_LOCK:
            info = self.info()
            version = info.version + 1
            info = replace(info, version=version, **changes)
            if masks_changed:
                info.mask_version = version
            self.save_info(info)
            return info

    def _editable(self) -> JobInfo:
        info = self.info()
        if info.active:
            raise InputError(RUN_IN_PROGRESS)
        return info

    # ------------------------------------------------------------------ frames and masks
    def _frame_files(self) -> list[Path]:
        if self._files is None:  # frames never change after the import
            self._files = FolderSource(self.frames_dir).files
        return self._files

    @property
    def frame_names(self) -> list[str]:
        """Frame names (file stems) in order; results are ``masks/<name>.png``."""
        return [p.stem for p in self._frame_files()]

    @property
    def frame_files(self) -> list[Path]:
        return list(self._frame_files())

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

    def result_frames(self) -> set[int]:
        """Indices of frames that have a result."""
        index = {n: i for i, n in enumerate(self.frame_names)}
        return {index[p.stem] for p in self.masks_dir.glob("*.png") if p.stem in index}

    def annotation(self, index: int) -> np.ndarray | None:
        """The user's label map ``(H, W)`` uint8 for frame ``index``, ``None`` if there is none."""
        p = self._ann_path(index)
        return read_mask(p).labels if p.exists() else None

    def _annotation_files(self) -> list[int]:
        return sorted(int(p.stem) for p in self.annotations_dir.glob("*.png") if p.stem.isdigit())

    def annotated_frames(self) -> list[int]:
        """Indices of frames with a user mask."""
        return self._annotation_files()

    def annotation_ids(self, index: int, info: JobInfo | None = None) -> list[int]:
        """The objects the user mask of frame ``index`` annotates (empty: no user mask)."""
        info = info or self.info()
        ids = (info.masks or {}).get(str(index))
        if ids is not None:
            return [int(i) for i in ids]
        labels = self.annotation(index)  # a mask file the record does not list (written by an older version)
        return [] if labels is None else [int(v) for v in np.unique(labels) if v]

    def annotation_summary(self, info: JobInfo | None = None) -> dict[int, list[int]]:
        """Frame index -> object ids its user mask annotates."""
        info = info or self.info()
        return {i: self.annotation_ids(i, info) for i in self.annotated_frames()}

    def object_ids(self) -> list[int]:
        """All object ids the user annotated."""
        return sorted({i for ids in self.annotation_summary().values() for i in ids})

    def shown(self, index: int, info: JobInfo | None = None) -> tuple[np.ndarray | None, str]:
        """What frame ``index`` shows (:func:`compose` of result and user mask) and which of them it is."""
        ann = self.annotation(index)
        res = self.result(index)
        if ann is None:
            return res, ("result" if res is not None else "no mask yet")
        labels = compose(res, ann, self.annotation_ids(index, info))
        return labels, ("your mask" if res is None else "your mask over the result")

    # ------------------------------------------------------------------ mask edits
    def _write_frame(self, index: int, state: tuple[np.ndarray, list[int]] | None, info: JobInfo) -> JobInfo:
        masks = dict(info.masks or {})
        if state is None:
            self._ann_path(index).unlink(missing_ok=True)
            masks.pop(str(index), None)
        else:
            labels, ids = state
            write_mask(self._ann_path(index), labels, DAVIS_PALETTE)
            masks[str(index)] = sorted(int(i) for i in ids)
        objects = _with_objects(info.object_list, _all_ids(masks))
        return self.edit(masks_changed=True, masks=masks, objects=[asdict(o) for o in objects])

    def _record(self, index: int, before: _FrameState, after: _FrameState, what: str) -> None:
        hist = _HISTORIES.setdefault(self.folder, _History())
        hist.undo.append(_Edit(index, before, after, what))
        del hist.undo[:-HISTORY_LIMIT]
        hist.redo.clear()

    def _frame_state(self, index: int, info: JobInfo) -> _FrameState:
        labels = self.annotation(index)
        return None if labels is None else _pack(labels, self.annotation_ids(index, info))

    def _check_index(self, index: int, info: JobInfo) -> None:
        if not 0 <= index < info.num_frames:
            raise InputError(f"frame {index} is outside the video (0..{info.num_frames - 1})")

    def edit_object_mask(self, index: int, obj_id: int, mask: np.ndarray, what: str = "mask edit") -> bool:
        """Make ``mask`` (``(H, W)`` bool) object ``obj_id``'s mask on frame ``index``; the others are unchanged.

        The object's pixels become part of the frame's user mask (which then annotates it); pixels another object
        had there are taken over. An empty ``mask`` says the object is not on the frame (where a result shows
        it), or, with nothing else on the frame, removes the user mask.

        Returns:
            Whether anything changed (``False``: the object's mask was that already; nothing was written).
        Raises:
            InputError: no such object or frame, or a run of the job is in progress.
        """
        with RECORD_LOCK:
            info = self._editable()
            self._check_index(index, info)
            if obj_id not in {o.id for o in info.object_list}:
                raise InputError(f"there is no object {obj_id}")
            mask = np.asarray(mask, bool)
            if mask.shape != (info.height, info.width):
                raise InputError(f"the mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the video frames are "
                                 f"{info.width}x{info.height}")
            ann = self.annotation(index)
            ids = self.annotation_ids(index, info) if ann is not None else []
            shown, _ = self.shown(index, info)
            if shown is not None and np.array_equal(shown == obj_id, mask) and (obj_id in ids or not mask.any()):
                return False
            labels = np.zeros((info.height, info.width), np.uint8) if ann is None else ann.copy()
            labels[labels == obj_id] = 0
            labels[mask] = obj_id
            new_ids = sorted(set(ids) | {obj_id})
            res = self.result(index)
            if not labels.any() and (res is None or not np.isin(res, new_ids).any()):
                new: tuple[np.ndarray, list[int]] | None = None  # nothing left to say about this frame
            else:
                new = (labels, new_ids)
            before = self._frame_state(index, info)
            after = None if new is None else _pack(*new)
            if before == after:
                return False
            self._write_frame(index, new, info)
            self._record(index, before, after, what)
            return True

    def set_annotation(self, index: int, mask: LabelMask | np.ndarray | Image.Image | str | os.PathLike[str],
                       what: str = "mask") -> list[int]:
        """Store a whole user mask for frame ``index`` (replacing an earlier one): the frame's truth.

        Every object of the job annotated there: objects absent from ``mask`` are absent on the frame.

        Args:
            index: frame index.
            mask: ``(H, W)`` label map (array, PIL image or path) with object ids; 0 = background.
        Returns:
            The object ids in the mask.
        Raises:
            InputError: wrong size, no object, outside the video, or a run of the job is in progress.
        """
        labels = as_label_mask(mask).labels
        with RECORD_LOCK:
            info = self._editable()
            self._check_index(index, info)
            if labels.shape != (info.height, info.width):
                raise InputError(f"the mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but the video frames are "
                                 f"{info.width}x{info.height}; upload a mask of the frame size")
            ids = [int(v) for v in np.unique(labels) if v]
            if not ids:
                raise InputError(f"the mask for frame {index} has no object (every pixel is background)")
            before = self._frame_state(index, info)
            annotated = sorted(set(ids) | {o.id for o in info.object_list})
            self._write_frame(index, (labels.astype(np.uint8), annotated), info)
            self._record(index, before, _pack(labels, annotated), what)
            return ids

    def remove_annotation(self, index: int) -> bool:
        """Delete the user mask of frame ``index``; returns whether there was one.

        Raises:
            InputError: a run of the job is in progress.
        """
        with RECORD_LOCK:
            info = self._editable()
            before = self._frame_state(index, info)
            if before is None:
                return False
            self._write_frame(index, None, info)
            self._record(index, before, None, "removal of the frame's mask")
            return True

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
        return self.set_annotation(index, labels, what="uploaded mask")

    # ------------------------------------------------------------------ undo / redo
    def history(self) -> tuple[str | None, str | None]:
        """What undo and redo would change now (``None``: nothing)."""
        hist = _HISTORIES.get(self.folder)
        if hist is None:
            return None, None
        u = hist.undo[-1] if hist.undo else None
        r = hist.redo[-1] if hist.redo else None
        return (None if u is None else f"{u.what} on frame {u.frame}",
                None if r is None else f"{r.what} on frame {r.frame}")

    def _step(self, back: bool) -> int | None:
        with RECORD_LOCK:
            info = self._editable()
            hist = _HISTORIES.get(self.folder)
            stack = None if hist is None else (hist.undo if back else hist.redo)
            if not stack:
                return None
            edit = stack.pop()
            self._write_frame(edit.frame, _unpack(edit.before if back else edit.after), info)
            (hist.redo if back else hist.undo).append(edit)  # type: ignore[union-attr]
            return edit.frame

    def undo(self) -> int | None:
        """Undo the last mask edit; returns its frame (``None``: nothing to undo)."""
        return self._step(True)

    def redo(self) -> int | None:
        """Redo the last undone mask edit; returns its frame (``None``: nothing to redo)."""
        return self._step(False)

    def forget_history(self) -> None:
        _HISTORIES.pop(self.folder, None)

    # ------------------------------------------------------------------ objects
    def objects(self) -> list[ObjectInfo]:
        """The object list, by id."""
        return sorted(self.info().object_list, key=lambda o: o.id)

    def add_object(self, name: str | None = None) -> ObjectInfo:
        """A new object (id one above the largest so far) with a colour unlike the others'."""
        with RECORD_LOCK:
            objects = self.objects()
            obj_id = max((o.id for o in objects), default=0) + 1
            if obj_id > 255:
                raise InputError("a job can have at most 255 objects")
            colour_name, colour = _free_colour(objects)
            obj = ObjectInfo(obj_id, (name or "").strip()[:60] or f"object {obj_id}", colour)
            self.edit(objects=[asdict(o) for o in [*objects, obj]])
            logger.info("job %s: new object %d (%s, %s)", self.id, obj_id, obj.name, colour_name)
            return obj

    def update_object(self, obj_id: int, *, name: str | None = None, colour: str | None = None,
                      hidden: bool | None = None) -> ObjectInfo:
        """Rename, recolour, hide or show an object (nothing is written when nothing changes).

        Raises:
            InputError: no such object, an empty name, or a colour too close to another object's.
        """
        from rdevos_web.drawing import MIN_COLOUR_DISTANCE, colour_distance, hex_to_rgb

        with RECORD_LOCK:
            objects = self.objects()
            obj = next((o for o in objects if o.id == obj_id), None)
            if obj is None:
                raise InputError(f"there is no object {obj_id}")
            old = replace(obj)
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
            if obj != old:
                self.edit(objects=[asdict(o) for o in objects])
            return obj

    def delete_object(self, obj_id: int) -> int:
        """Remove an object from the list, from every user mask and from the results; returns the masks changed.

        User masks left without any object are removed. The mask edit history is cleared (it cannot be undone).

        Raises:
            InputError: a run of the job is in progress.
        """
        changed = 0
        with RECORD_LOCK:
            info = self._editable()
            masks = dict(info.masks or {})
            for i in self.annotated_frames():
                labels = self.annotation(i)
                ids = self.annotation_ids(i, info)
                if labels is None or obj_id not in ids and not (labels == obj_id).any():
                    continue
                labels = np.where(labels == obj_id, 0, labels).astype(np.uint8)
                ids = [k for k in ids if k != obj_id]
                if labels.any():
                    write_mask(self._ann_path(i), labels, DAVIS_PALETTE)
                    masks[str(i)] = ids
                else:
                    self._ann_path(i).unlink(missing_ok=True)
                    masks.pop(str(i), None)
                changed += 1
            for p in self.masks_dir.glob("*.png"):
                try:
                    labels = read_mask(p).labels
                except InputError:
                    continue
                if (labels == obj_id).any():
                    write_mask(p, np.where(labels == obj_id, 0, labels).astype(np.uint8), DAVIS_PALETTE)
                    changed += 1
            self.edit(masks_changed=True, masks=masks,
                      objects=[asdict(o) for o in info.object_list if o.id != obj_id])
            self.forget_history()
        logger.info("job %s: deleted object %d (%d masks changed)", self.id, obj_id, changed)
        return changed

    # ------------------------------------------------------------------ settings
    def settings(self, default: JobSettings | None = None) -> JobSettings:
        """The job's run settings (those stored with it over ``default``, the server's)."""
        return (default or JobSettings()).merged(self.info().settings)

    def set_settings(self, default: JobSettings | None = None, **changes: Any) -> JobSettings:
        """Change the job's run settings (checked; stored with the job, so a reload or restart keeps them).

        Raises:
            InputError: an invalid value.
        """
        with RECORD_LOCK:
            current = self.settings(default)
            new = current.checked(**changes)
            if new != current or self.info().settings is None:
                self.edit(settings=asdict(new))
            return new


def _all_ids(masks: dict[str, list[int]] | None) -> list[int]:
    return sorted({int(i) for ids in (masks or {}).values() for i in ids})


def _free_colour(objects: Sequence[ObjectInfo]) -> tuple[str, str]:
    from rdevos_web.drawing import MIN_COLOUR_DISTANCE, colour_distance, palette_colour

    for i in range(256):
        name, colour = palette_colour(i)
        if all(colour_distance(colour, o.colour) >= MIN_COLOUR_DISTANCE for o in objects):
            return name, colour
    return palette_colour(len(objects))


def _with_objects(objects: list[ObjectInfo], ids: Sequence[int]) -> list[ObjectInfo]:
    """``objects`` plus an entry for each id of ``ids`` it lacks (masks uploaded with new objects)."""
    out = list(objects)
    known = {o.id for o in out}
    for i in ids:
        if i not in known:
            out.append(ObjectInfo(int(i), f"object {i}", _free_colour(out)[1]))
            known.add(i)
    return sorted(out, key=lambda o: o.id)
