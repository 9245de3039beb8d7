"""Resumable runs: segment a video into a folder of PNGs, one frame at a time, continuing an interrupted run exactly.

The one write loop behind ``rdevos segment``, the web app's jobs and ``rdevos run-dataset``:

* :func:`run_signature` names a run (input, model, settings, annotations, direction, start);
* :class:`RunFolder` owns the folder's run record (``.rdevos-run.json``), the list of the files the run wrote
  (``.rdevos-files``: the only files it ever overwrites or deletes), the resume state (``.rdevos-resume.pt``) and
  the lock (``.rdevos-lock``); it refuses a folder that holds another run, image files rdevos did not write, or the
  run's own inputs, and knows which outputs a finished run must have;
* :func:`segment_to_folder` writes one palette PNG per frame as it is done, saves a :class:`RunState` after each
  memory update, and on a rerun continues after it (byte-identical PNGs); a finished run gets every output asked for
  on every frame (missing ones are made, the others are not rewritten).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rdevos.errors import InputError, RDEVOSError
from rdevos.inference.plan import Direction, PropagationPlan
from rdevos.io.atomic import write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:
    from rdevos.inference.session import SegmentedFrame, VideoSession

logger = logging.getLogger(__name__)

__all__ = ["RunState", "RunProgress", "RunResult", "RunFolder", "RunFolderError", "RunFolderBusy", "run_signature",
           "segment_to_folder"]


@dataclass(frozen=True)
class RunState:
    """Where a run stands after a memory update: enough to continue it with identical results.

    Attributes:
        direction: the pass (``FORWARD`` or ``BACKWARD``; ``both`` runs its forward pass first).
        frame: the last frame that pass processed; a resume continues with the next one in its order.
        engine: :meth:`InferenceEngine.state_dict` after that frame (tensors, ints and lists).
    """

    direction: Direction
    frame: int
    engine: dict[str, object]


@dataclass(frozen=True)
class RunProgress:
    """Passed to ``on_frame`` after each result is written.

    Attributes:
        frame: the result.
        done: results of the whole run so far (never goes back, also across resumes).
        total: results the run gives (``None`` on a stream).
    """

    frame: SegmentedFrame
    done: int
    total: int | None


@dataclass
class RunResult:
    """What :func:`segment_to_folder` did."""

    frames: int = 0  #: frames finished in this call (a frame both passes reach counts once)
    written: int = 0  #: frames whose mask PNG this call wrote (once each)
    done: int = 0  #: results of the whole run so far (``both``: a fused frame is two results)
    total: int | None = None  #: results of the whole run
    seconds: float = 0.0
    resumed: RunState | None = None  #: the state this call continued from
    restored: list[str] = field(default_factory=list)  #: frames whose missing outputs were written afterwards
    complete_already: bool = False  #: the folder held the whole finished run: nothing was done
    stopped: bool = False  #: ``should_stop`` ended the call early (resumable)
    ran: bool = False  #: this call propagated the run (from its start or a saved state), not only filled in outputs

    @property
    def complete(self) -> bool:
        return not self.stopped


class RunFolderError(InputError):
    """The output folder cannot take this run: it holds another run's results, files rdevos did not write, or the
    run's inputs.

    Attributes:
        other_run: the folder holds the results of another rdevos run (``overwrite=True`` deletes exactly the
            files that run wrote); ``False``: nothing rdevos may delete would help.
    """

    def __init__(self, message: str, *, other_run: bool = False) -> None:
        super().__init__(message)
        self.other_run = other_run


class RunFolderBusy(RDEVOSError):
    """Another process is writing into the output folder (it holds the folder's lock)."""


def run_signature(*, source: str, annotations: Mapping[int, np.ndarray], config: object,
                  direction: Direction | str = Direction.FORWARD, start: int | None = None,
                  extra: object = None) -> str:
    """The identity of a run: same signature = same results, so a folder can be continued.

    Args:
        source: the input (a resolved path or URL).
        annotations: frame -> (H, W) label map given there (the masks the session propagates).
        config: inference settings (their ``to_dict()`` or ``repr`` is hashed).
        direction, start: as for :meth:`VideoSession.propagate`.
        extra: anything else that changes the results (model name, device, prompt options); JSON-able.
    """
    cfg = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    h = hashlib.sha256(json.dumps([source, cfg, Direction(direction).value, start, extra], sort_keys=True,
                                  default=repr).encode())
    for f in sorted(annotations):
        labels = np.ascontiguousarray(annotations[f], dtype=np.uint8)
        h.update(f"{f}:{labels.shape}".encode())
        h.update(labels.tobytes())
    return h.hexdigest()


class RunFolder:
    """A folder of per-frame results with its run record, the list of files the run wrote, and resume state.

    What a run may touch: it writes ``<frame>.png``, ``probs/<frame>.npz`` and ``objects/<id>/<frame>.png``, and
    lists each in ``.rdevos-files`` (the manifest) before writing it. Only listed files are ever overwritten or
    deleted (:meth:`clear`); a file in the way that is not listed is an error naming it (:meth:`claim`). A new run
    (or one started again with ``overwrite``) is refused in a folder that holds image files the manifest does not
    list, so results never land among someone's frames or photos. ``.rdevos-lock`` keeps a second process out
    while a run writes (:meth:`locked`).

    Args:
        path: where ``<frame>.png`` (and ``probs/``, ``objects/``) go; created if missing.
        meta_path: the run record (default ``path/.rdevos-run.json``).
        state_path: the resume state (default ``path/.rdevos-resume.pt``).
    """

    META = ".rdevos-run.json"
    STATE = ".rdevos-resume.pt"
    MANIFEST = ".rdevos-files"
    LOCK = ".rdevos-lock"

    def __init__(self, path: str | os.PathLike[str], *, meta_path: str | os.PathLike[str] | None = None,
                 state_path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.meta_path = Path(meta_path) if meta_path is not None else self.path / self.META
        self.state_path = Path(state_path) if state_path is not None else self.path / self.STATE
        self.manifest_path = self.path / self.MANIFEST
        self.lock_path = self.path / self.LOCK
        self._owned: set[str] | None = None
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ files
    def mask_path(self, name: str) -> Path:
        return self.path / f"{name}.png"

    def probs_path(self, name: str) -> Path:
        return self.path / "probs" / f"{name}.npz"

    def object_path(self, obj_id: int, name: str) -> Path:
        return self.path / "objects" / str(int(obj_id)) / f"{name}.png"

    def read_meta(self) -> dict[str, Any] | None:
        """The run record, ``None`` if there is none (or it is unreadable)."""
        try:
            return dict(json.loads(self.meta_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_text_atomic(self.meta_path, json.dumps(dict(meta), default=str))

    def save_state(self, state: RunState, signature: str, done: int) -> None:
        import torch

        buf = io.BytesIO()  # serialised first: a full disk is then an OSError naming the file, not torch's error
        torch.save({"signature": signature, "direction": state.direction.value, "frame": state.frame,
                    "state": state.engine, "done": done}, buf)
        write_bytes_atomic(self.state_path, buf.getvalue())

    def load_state(self, signature: str) -> RunState | None:
        """The saved state of the run ``signature`` (``None``: none, unreadable, or another run's)."""
        if not self.state_path.exists():
            return None
        import torch

        try:
            st = torch.load(self.state_path, map_location="cpu", weights_only=True)
            if st.get("signature", signature) != signature:
                return None
            return RunState(Direction(st["direction"]), int(st["frame"]), st["state"])
        except Exception as e:  # noqa: BLE001 - a damaged state file only costs the resume
            logger.warning("cannot read the resume state %s (%s): starting again", self.state_path, e)
            return None

    # ------------------------------------------------------------------ what the run wrote
    def owned(self) -> set[str]:
        """Paths (relative to the folder, ``/``-separated) of the files the folder's run wrote, from its manifest."""
        if self._owned is None:
            owned: set[str] = set()
            with contextlib.suppress(FileNotFoundError):
                for line in self.manifest_path.read_text("utf-8").splitlines():
                    with contextlib.suppress(ValueError):
                        rel = json.loads(line)
                        if isinstance(rel, str) and _inside(rel):
                            owned.add(rel)
            self._owned = owned
        return self._owned

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()

    def claim(self, path: Path, *, foreign_ok: bool = False) -> Path:
        """List ``path`` (a file in this folder) in the manifest, before it is written; returns it.

        Raises:
            RunFolderError: a file the run did not write is at ``path`` (unless ``foreign_ok``).
        """
        rel = self._rel(path)
        if rel not in self.owned():
            if not foreign_ok:
                self.refuse_in_the_way([path])
            self._append([rel])
        return path

    def refuse_in_the_way(self, paths: Iterable[Path]) -> None:
        """Raise :class:`RunFolderError` naming the first of ``paths`` (in this folder) that holds a file the run
        did not write."""
        owned = self.owned()
        for p in paths:
            if self._rel(p) not in owned and (p.exists() or p.is_symlink()):
                raise RunFolderError(f"{p} is in the way: rdevos did not write it and never overwrites such a file "
                                     "(move it away or write to another folder)")

    def adopt(self, paths: Iterable[Path]) -> None:
        """List existing ``paths`` as written by the run (a run record of an older rdevos, which kept no manifest)."""
        new = [r for r in (self._rel(p) for p in paths if p.is_file()) if r not in self.owned()]
        self._append(new)

    def _append(self, rels: Sequence[str]) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.manifest_path, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rels)
        except OSError as e:
            raise _naming(e, self.manifest_path) from e
        self.owned().update(rels)

    def foreign_images(self) -> list[Path]:
        """Image files directly in the folder that its run did not write (sorted)."""
        if not self.path.is_dir():
            return []
        from rdevos.io.frames import IMAGE_EXTENSIONS

        owned = self.owned()
        return sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith(".") and p.name not in owned and not p.is_dir())

    def refuse_foreign(self) -> None:
        """Refuse a folder holding image files the run did not write (a new run must not write among them).

        Raises:
            RunFolderError: naming up to three of them.
        """
        foreign = self.foreign_images()
        if foreign:
            shown = ", ".join(p.name for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                                              else "")
            raise RunFolderError(f"{self.path} holds image files rdevos did not write ({shown}); rdevos never "
                                 "overwrites or deletes them: write to a new or empty folder, or move them away")

    def refuse_inputs(self, files: Iterable[str | os.PathLike[str]], what: str = "input") -> None:
        """Refuse inputs (frames, masks) that lie where the run writes: in the folder or its ``probs``/``objects``.

        A symlinked input counts where the link is and where it points to.

        Raises:
            RunFolderError: naming the first such file.
        """
        out = self.path.resolve()
        guarded = (out / "probs", out / "objects")
        seen: set[Path] = set()
        for f in files:
            p = Path(f)
            for parent in (p.absolute().parent.resolve(), p.resolve().parent):
                if parent in seen:
                    continue
                seen.add(parent)
                if parent == out or any(parent == g or g in parent.parents for g in guarded):
                    raise RunFolderError(f"{what} {f} lies in the output folder {self.path}: the results would be "
                                         "written among the inputs (and could replace them); write to another folder")

    def clear(self, outputs: bool = True) -> None:
        """Forget the run: delete its record, resume state and manifest, and (``outputs``) the files it wrote.

        Only the files the manifest lists are deleted (and the ``probs``/``objects`` folders they leave empty);
        anything else in the folder stays.
        """
        if outputs:
            dirs: set[Path] = set()
            for rel in sorted(self.owned()):
                p = self.path / rel
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                dirs.update(d for d in p.parents if self.path in d.parents)
            for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first; only empty ones
                with contextlib.suppress(OSError):
                    d.rmdir()
        self.state_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        self._owned = None

    def missing_outputs(self, names: Iterable[str], *, probs: Iterable[str] = (),
                        object_ids: Sequence[int] = ()) -> dict[str, set[str]]:
        """Which outputs are not in the folder: name -> subset of ``{"mask", "probs", "objects"}``.

        Args:
            names: frames that must have a mask PNG.
            probs: frames that must have probabilities.
            object_ids: objects each of ``names`` must have a per-object PNG of.
        """
        need_probs = set(probs)
        out: dict[str, set[str]] = {}
        for n in names:
            kinds = set()
            if not self.mask_path(n).exists():
                kinds.add("mask")
            if n in need_probs and not self.probs_path(n).exists():
                kinds.add("probs")
            if any(not self.object_path(i, n).exists() for i in object_ids):
                kinds.add("objects")
            if kinds:
                out[n] = kinds
        return out

    def missing(self, names: Iterable[str], *, probs: bool = False) -> list[str]:
        """Names among ``names`` whose mask PNG (or, with ``probs``, probabilities) is not in the folder."""
        names = list(names)
        return list(self.missing_outputs(names, probs=names if probs else ()))

    # ------------------------------------------------------------------ one writer at a time
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock while the block runs (re-entrant for this object).

        An advisory ``flock`` on ``.rdevos-lock`` (it holds the owner's process id): the system releases it when the
        process ends, killed or not, so a lock never outlives its process. No lock on systems without ``fcntl``.

        Raises:
            RunFolderBusy: another process holds it.
        """
        if self._lock_fd is not None:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = self._acquire()
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            if fd >= 0:
                with contextlib.suppress(OSError):
                    self.lock_path.unlink()  # while still held: a waiting opener then re-checks the file
                os.close(fd)

    def holder(self) -> int | None:
        """The process id holding the folder's lock (0 if unknown), ``None`` if it is free."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read_pid(fd)
            return None
        finally:
            os.close(fd)  # also drops the probe's own shared lock

    def refuse_busy(self) -> None:
        """Raise :class:`RunFolderBusy` if another process holds the folder's lock (a check before any work)."""
        pid = self.holder()
        if pid is not None:
            raise self._busy(pid)

    def _busy(self, pid: int) -> RunFolderBusy:
        who = f"process {pid}" if pid else "another process"
        return RunFolderBusy(f"{self.path} is in use by another rdevos run ({who}): wait until it ends (then run "
                             "the same command again to finish or check that run) or write to another folder")

    def _acquire(self) -> int:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return -1
        deadline = time.monotonic() + 1.0  # a probe (holder()) holds it for microseconds: retry briefly
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise _naming(e, self.lock_path) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _read_pid(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise self._busy(pid) from None
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder removed while we waited
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)

    # ------------------------------------------------------------------ a run's start
    def check(self, signature: str, *, overwrite: bool = False, replace: bool = False) -> dict[str, Any] | None:
        """Make the folder ready for the run ``signature``; returns its earlier record of this run, if any.

        Nothing is deleted before the folder is known to be usable.

        Args:
            overwrite: start again: delete the files the folder's earlier run wrote (as its manifest lists them),
                this run's or another's; other files stay.
            replace: keep another run's results but take the folder over (the web app: a correction run
                rewrites only the frames it reaches; files in the way are overwritten).
        Raises:
            RunFolderError: the folder holds another run (without ``overwrite``), image files rdevos did not write
                (a new run), or results of an older rdevos that kept no manifest (with ``overwrite``).
        """
        meta = self.read_meta()
        same = meta is not None and meta.get("signature") == signature
        if replace:
            if meta is None:
                self.state_path.unlink(missing_ok=True)
            elif not same:
                self.clear(outputs=False)
            return meta if same else None
        if same and not overwrite:
            return meta
        if meta is not None and not overwrite:
            raise RunFolderError(f"{self.path} holds results of a different run (other input, masks, model or "
                                 "settings)", other_run=True)
        if meta is not None and not self.manifest_path.exists() and any(self.path.glob("*.png")):
            raise RunFolderError(f"{self.path} holds results of an older rdevos that did not list the files it "
                                 "wrote, so they cannot be deleted safely: delete them yourself or write to another "
                                 "folder")
        self.refuse_foreign()  # before anything is deleted
        if overwrite:
            self.clear(outputs=True)
        else:  # no record: a new run (files a manifest lists are still the folder's own: they stay listed)
            self.state_path.unlink(missing_ok=True)
        return None


def _inside(rel: str) -> bool:
    """A manifest entry names a file inside the folder (no absolute path, no ``..``)."""
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name (a failed write names no file)."""
    if e.errno is None or e.filename is not None:
        return e
    return OSError(e.errno, e.strerror, str(path))


def _frame_names(session: VideoSession, plan: PropagationPlan) -> dict[int, str] | None:
    if plan.total is None:
        return None
    names = session.source.names
    outs = plan.outputs()
    if names is None:
        return {i: f"{i:05d}" for i in outs}
    return {i: names[i] for i in outs}


class _Writer:
    """Writes a run's files into its folder, each listed in the manifest before it is written (a writer thread must
    get the paths claimed, in order, by the thread that runs the loop)."""

    def __init__(self, rf: RunFolder, palette: list[int], writer: Callable[[SegmentedFrame, Path], None] | None,
                 object_ids: Sequence[int], foreign_ok: bool) -> None:
        self.rf, self.palette, self.writer = rf, palette, writer
        self.object_ids = list(object_ids)
        self.foreign_ok = foreign_ok

    def _claim(self, path: Path) -> Path:
        return self.rf.claim(path, foreign_ok=self.foreign_ok)

    def mask(self, fr: SegmentedFrame) -> None:
        from rdevos.io.masks import write_mask

        path = self._claim(self.rf.mask_path(fr.name))
        if self.writer is not None:
            self.writer(fr, path)
        else:
            write_mask(path, fr.labels, self.palette)

    def probs(self, fr: SegmentedFrame) -> None:
        from rdevos.io.masks import write_probabilities

        assert fr.prob is not None
        write_probabilities(self._claim(self.rf.probs_path(fr.name)), fr.prob.cpu().numpy(), [0, *fr.object_ids])

    def objects(self, name: str, labels: np.ndarray) -> None:
        from rdevos.io.masks import write_object_masks

        for i in self.object_ids:
            self._claim(self.rf.object_path(i, name))
        write_object_masks(self.rf.path / "objects", name, labels, self.object_ids)


def segment_to_folder(session: VideoSession, folder: RunFolder | str | os.PathLike[str], *, signature: str,
                      direction: Direction | str = Direction.FORWARD, start: int | None = None,
                      palette: Sequence[int] | None = None, save_probs: bool = False, per_object: bool = False,
                      write: Callable[[str], bool] | None = None,
                      writer: Callable[[SegmentedFrame, Path], None] | None = None, overwrite: bool = False,
                      replace: bool = False,
                      info: Mapping[str, Any] | None = None, on_frame: Callable[[RunProgress], None] | None = None,
                      should_stop: Callable[[], bool] | None = None, progress: bool = False) -> RunResult:
    """Propagate a session into a folder of palette PNGs, resumable; the one write loop of every front end.

    A new folder is filled frame by frame. A rerun with the same ``signature`` continues after the last saved
    state (the PNGs come out byte-identical to an uninterrupted run). When the run is through, every output asked
    for is checked on every frame (:meth:`PropagationPlan.outputs`), also those of an earlier call that was not asked
    for them (``save_probs``/``per_object`` added on a resume): per-object PNGs missing next to a mask are made from
    it, missing masks and probabilities are computed again; nothing else is rewritten.

    The folder is locked while the call runs (:meth:`RunFolder.locked`). Only files the run wrote are overwritten
    or deleted (see :class:`RunFolder`); a write that fails (full disk) raises an ``OSError`` naming the file,
    and everything written so far stays, resumable.

    Args:
        session: a :class:`VideoSession` with its masks added.
        folder: the output folder (or a :class:`RunFolder`).
        signature: the run's identity (:func:`run_signature`).
        direction, start: as for :meth:`VideoSession.propagate`.
        palette: PNG palette (default: DAVIS).
        save_probs: also write ``probs/<frame>.npz`` (not for fused frames of ``both``: they have none).
        per_object: also ``objects/<id>/<frame>.png`` (0/255), every object on every frame.
        write: which frame names get outputs (default: all); a finished run needs only those.
        writer: ``writer(frame, path)`` writes a result PNG (default: :func:`~rdevos.io.masks.write_mask`).
        overwrite, replace: see :meth:`RunFolder.check`.
        info: extra fields for the run record (input, settings).
        on_frame: called after each result is written.
        should_stop: polled after each result; ``True`` ends the call (resumable).
        progress: show a tqdm bar (it starts where a resumed run stood).
    Raises:
        RunFolderError: the folder holds another run, files in the way, or the session's input frames.
        RunFolderBusy: another process is writing into the folder.
    """
    from rdevos.io.masks import DAVIS_PALETTE

    rf = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    direction = Direction(direction)
    plan = session.plan(direction, start)
    names = _frame_names(session, plan)
    wanted = None if names is None else [n for n in names.values() if write is None or write(n)]
    files = getattr(session.source, "files", None)
    if files is not None and not replace:
        rf.refuse_inputs(files, "input frame")
    out = _Writer(rf, list(palette) if palette is not None else list(DAVIS_PALETTE), writer,
                  session.object_ids if per_object else (), foreign_ok=replace)
    with rf.locked():
        meta = rf.check(signature, overwrite=overwrite, replace=replace)
        if meta is not None and not replace and not rf.manifest_path.exists() and names is not None:
            rf.adopt(_outputs_named(rf, names.values()))  # a run of an older rdevos (no manifest): they are its own
        expected = None
        if wanted is not None:
            fused = {names[i] for p in plan.passes for i in p.fused}  # type: ignore[index]
            expected = _Expected(wanted, [n for n in wanted if n not in fused] if save_probs else [], out.object_ids)
            if not replace:
                rf.refuse_in_the_way(expected.paths(rf))  # before any work
        result = RunResult(total=plan.total)
        if meta is not None and meta.get("complete"):
            result.done = int(meta.get("done", plan.total or 0))
        else:
            _run(session, rf, out, plan, names, result, meta=meta, signature=signature, direction=direction,
                 start=start, save_probs=save_probs, write=write,
                 record={"signature": signature, "direction": direction.value, "start": start, "total": plan.total,
                         **(info or {})},
                 on_frame=on_frame, should_stop=should_stop, progress=progress)
            if result.stopped:
                return result
        if expected is not None:
            _complete(session, rf, out, result, expected, direction=direction, start=start,
                      fresh=meta is None or not meta.get("complete"), should_stop=should_stop)
        elif meta is not None and meta.get("complete"):  # a stream: no list of outputs to check
            result.complete_already = True
    return result


def _outputs_named(rf: RunFolder, names: Iterable[str]) -> Iterator[Path]:
    """Where a run writes the outputs of these frames (mask, probabilities, per-object PNGs of any object)."""
    objects = [d for d in (rf.path / "objects").glob("*") if d.is_dir()]
    for n in names:
        yield rf.mask_path(n)
        yield rf.probs_path(n)
        yield from (d / f"{n}.png" for d in objects)


class _Expected(NamedTuple):
    """The outputs a finished run has."""

    names: list[str]  #: a mask PNG each
    probs: list[str]  #: probabilities each
    object_ids: list[int]  #: a per-object PNG of each of these on every frame of ``names``

    def paths(self, rf: RunFolder) -> Iterator[Path]:
        for n in self.names:
            yield rf.mask_path(n)
            yield from (rf.object_path(i, n) for i in self.object_ids)
        yield from (rf.probs_path(n) for n in self.probs)


def _run(session: VideoSession, rf: RunFolder, out: _Writer, plan: PropagationPlan, names: dict[int, str] | None,
         result: RunResult, *, meta: Mapping[str, Any] | None, signature: str, direction: Direction,
         start: int | None, save_probs: bool, write: Callable[[str], bool] | None, record: dict[str, Any],
         on_frame: Callable[[RunProgress], None] | None, should_stop: Callable[[], bool] | None,
         progress: bool) -> None:
    """The run itself, from the start or after the saved state: each result written as it comes."""
    from tqdm.auto import tqdm

    from rdevos.inference.pipelining import propagate_ahead
    from rdevos.io.masks import read_mask

    resume: RunState | None = None
    high = 0
    if meta is not None:
        resume = rf.load_state(signature)
        if resume is not None:
            try:
                high = plan.done_through(resume.direction, resume.frame)
            except ValueError:
                resume = None
            else:
                high = max(high, min(int(meta.get("done", 0)), plan.total or 1 << 62))
                logger.info("resuming the %s pass after frame %d", resume.direction.value, resume.frame)
    result.resumed = resume
    result.ran = True
    if not rf.manifest_path.exists():
        rf._append([])
    rf.write_meta({**record, "complete": False, "done": high})

    def earlier(idx: int) -> np.ndarray | None:  # a fused frame's forward result, as a resumed run wrote it
        p = rf.mask_path(names[idx]) if names is not None else None
        return read_mask(p).labels if p is not None and p.exists() else None

    pos = plan.done_through(resume.direction, resume.frame) if resume is not None else 0
    done = max(pos, high)

    def checkpoint(st: RunState) -> None:
        rf.save_state(st, signature, pos)

    t0 = time.perf_counter()
    bar = tqdm(total=plan.total, initial=done, unit="frame", desc="segment", disable=not progress,
               dynamic_ncols=True)
    # The engine runs a few frames ahead in a worker thread; writes, state saves and callbacks stay here, in order.
    frames = propagate_ahead(session, direction=direction, start=start, return_probs=save_probs,
                             checkpoint=checkpoint, resume=resume, earlier=earlier)
    try:
        for fr in frames:
            pos += 1
            result.frames += fr.final
            if write is None or write(fr.name):
                out.mask(fr)  # also a fused frame's forward result: a resumed run reads it back (earlier)
                if fr.final:
                    result.written += 1
                    if save_probs and fr.prob is not None:
                        out.probs(fr)
                    if out.object_ids:
                        out.objects(fr.name, fr.labels)
            if pos > done:
                bar.update(pos - done)
                done = pos
            if on_frame is not None:
                on_frame(RunProgress(fr, done, plan.total))
            if should_stop is not None and should_stop():
                result.stopped = True
                break
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: the record may not be writable either
            rf.write_meta({**record, "complete": False, "done": done})  # the counter never goes back
        raise
    finally:
        frames.close()
        bar.close()
        result.done = done
        result.seconds = time.perf_counter() - t0
    if result.stopped:
        rf.write_meta({**record, "complete": False, "done": done})
    else:
        rf.write_meta({**record, "complete": True, "done": done, "frames_this_run": result.frames,
                       "seconds": round(result.seconds, 2)})
        rf.state_path.unlink(missing_ok=True)


def _complete(session: VideoSession, rf: RunFolder, out: _Writer, result: RunResult, expected: _Expected,
              *, direction: Direction, start: int | None, fresh: bool,
              should_stop: Callable[[], bool] | None) -> None:
    """Give a finished run every output asked for: per-object PNGs from the masks, the rest computed again."""
    from rdevos.inference.pipelining import propagate_ahead
    from rdevos.io.masks import read_mask

    need = rf.missing_outputs(expected.names, probs=expected.probs, object_ids=expected.object_ids)
    if not need:
        result.complete_already = not fresh
        if not fresh:
            logger.info("%s holds the complete run already: nothing to do", rf.path)
        return
    t0 = time.perf_counter()
    for n in [n for n, kinds in need.items() if kinds == {"objects"}]:
        out.objects(n, read_mask(rf.mask_path(n)).labels)
        result.restored.append(n)
        del need[n]
    if need:
        logger.info("%s: %d frame(s) lack outputs (%s%s): computing them again", rf.path, len(need),
                    ", ".join(sorted(need)[:5]), ", ..." if len(need) > 5 else "")
        # As the run computed them (the same threads, so the same bytes)
        frames = propagate_ahead(session, direction=direction, start=start,
                                 return_probs=any("probs" in k for k in need.values()))
        try:
            for fr in frames:  # earlier=None: the forward results of fused frames come from this propagation
                result.frames += fr.final
                kinds = need.pop(fr.name, None) if fr.final else None
                if kinds:
                    if "mask" in kinds:
                        out.mask(fr)
                        result.written += 1
                    if "probs" in kinds and fr.prob is not None:
                        out.probs(fr)
                    if "objects" in kinds:
                        out.objects(fr.name, fr.labels)
                    result.restored.append(fr.name)
                if not need:
                    break
                if should_stop is not None and should_stop():
                    result.stopped = True
                    break
        finally:
            frames.close()
    result.seconds += time.perf_counter() - t0
    logger.info("wrote the missing outputs of %d frame(s) in %s", len(result.restored), rf.path)
