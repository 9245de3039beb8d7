"""Resumable runs: segment a video into a folder of PNGs, one frame at a time, continuing an interrupted run exactly.

The one write loop behind ``rdevos segment``, the web app's jobs and ``rdevos run-dataset``:

* :func:`run_signature` names a run (input, model, settings, annotations, direction, start);
* :class:`RunFolder` owns the folder's run record (``.rdevos-run.json``) and resume state (``.rdevos-resume.pt``),
  refuses a folder that holds another run, and knows which outputs a finished run must have;
* :func:`segment_to_folder` writes one palette PNG per frame as it is done, saves a :class:`RunState` after each
  memory update, and on a rerun continues after it (byte-identical PNGs), or, for a finished run, restores any
  missing output without rewriting the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rdevos.errors import InputError
from rdevos.inference.plan import Direction, PropagationPlan
from rdevos.io.atomic import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from rdevos.inference.session import SegmentedFrame, VideoSession

logger = logging.getLogger(__name__)

__all__ = ["RunState", "RunProgress", "RunResult", "RunFolder", "RunFolderError", "run_signature",
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

    frames: int = 0  #: results computed in this call
    written: int = 0  #: mask PNGs written in this call
    done: int = 0  #: results of the whole run so far
    total: int | None = None  #: results of the whole run
    seconds: float = 0.0
    resumed: RunState | None = None  #: the state this call continued from
    restored: list[str] = field(default_factory=list)  #: missing outputs of a finished run written again
    complete_already: bool = False  #: the folder held the whole finished run: nothing was done
    stopped: bool = False  #: ``should_stop`` ended the call early (resumable)

    @property
    def complete(self) -> bool:
        return not self.stopped


class RunFolderError(InputError):
    """The output folder holds another run's results (or files of another tool)."""


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
    """A folder of per-frame results with its run record and resume state.

    Args:
        path: where ``<frame>.png`` (and ``probs/``, ``objects/``) go; created if missing.
        meta_path: the run record (default ``path/.rdevos-run.json``).
        state_path: the resume state (default ``path/.rdevos-resume.pt``).
    """

    META = ".rdevos-run.json"
    STATE = ".rdevos-resume.pt"

    def __init__(self, path: str | os.PathLike[str], *, meta_path: str | os.PathLike[str] | None = None,
                 state_path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.meta_path = Path(meta_path) if meta_path is not None else self.path / self.META
        self.state_path = Path(state_path) if state_path is not None else self.path / self.STATE

    # ------------------------------------------------------------------ files
    def mask_path(self, name: str) -> Path:
        return self.path / f"{name}.png"

    def probs_path(self, name: str) -> Path:
        return self.path / "probs" / f"{name}.npz"

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

        with atomic_path(self.state_path) as tmp:
            torch.save({"signature": signature, "direction": state.direction.value, "frame": state.frame,
                        "state": state.engine, "done": done}, tmp)

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

    def clear(self, outputs: bool = True) -> None:
        """Delete the run record, the resume state and (``outputs``) the result PNGs and probabilities."""
        self.state_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        if outputs and self.path.is_dir():
            for f in self.path.glob("*.png"):
                f.unlink()
            for f in (self.path / "probs").glob("*.npz"):
                f.unlink()

    def missing(self, names: Iterable[str], *, probs: bool = False) -> list[str]:
        """Names among ``names`` whose mask PNG (or, with ``probs``, probabilities) is not in the folder."""
        return [n for n in names if not self.mask_path(n).exists() or (probs and not self.probs_path(n).exists())]

    def check(self, signature: str, *, overwrite: bool = False, replace: bool = False) -> dict[str, Any] | None:
        """Make the folder ready for the run ``signature``; returns its earlier record of this run, if any.

        Args:
            overwrite: delete another run's (or another tool's) results and start again.
            replace: keep another run's results but take the folder over (the web app: a correction run
                rewrites only the frames it reaches).
        Raises:
            RunFolderError: the folder holds another run, or PNGs without a run record (neither flag given).
        """
        meta = self.read_meta()
        if overwrite:
            self.clear(outputs=True)
            return None
        if meta is None:
            if not replace and self.path.is_dir() and any(self.path.glob("*.png")):
                raise RunFolderError(f"{self.path} already holds PNG files from another tool")
            if replace:
                self.state_path.unlink(missing_ok=True)
            return None
        if meta.get("signature") != signature:
            if not replace:
                raise RunFolderError(f"{self.path} holds results of a different run (other input, masks, model "
                                     "or settings)")
            self.clear(outputs=False)
            return None
        return meta


def _frame_names(session: VideoSession, plan: PropagationPlan) -> dict[int, str] | None:
    if plan.total is None:
        return None
    names = session.source.names
    outs = plan.outputs()
    if names is None:
        return {i: f"{i:05d}" for i in outs}
    return {i: names[i] for i in outs}


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
    state (the PNGs come out byte-identical to an uninterrupted run); a finished run is checked for every output
    it must have (:meth:`PropagationPlan.outputs`) and only the missing ones are computed and written.

    Args:
        session: a :class:`VideoSession` with its masks added.
        folder: the output folder (or a :class:`RunFolder`).
        signature: the run's identity (:func:`run_signature`).
        direction, start: as for :meth:`VideoSession.propagate`.
        palette: PNG palette (default: DAVIS).
        save_probs: also write ``probs/<frame>.npz``; per_object: also ``objects/<id>/<frame>.png``.
        write: which frame names get a PNG (default: all); a finished run needs only those.
        writer: ``writer(frame, path)`` writes a result PNG (default: :func:`~rdevos.io.masks.write_mask`).
        overwrite, replace: see :meth:`RunFolder.check`.
        info: extra fields for the run record (input, settings).
        on_frame: called after each result is written.
        should_stop: polled after each result; ``True`` ends the call (resumable).
        progress: show a tqdm bar (it starts where a resumed run stood).
    Raises:
        RunFolderError: the folder holds another run.
    """
    from tqdm.auto import tqdm

    from rdevos.inference.pipelining import propagate_ahead
    from rdevos.io.masks import DAVIS_PALETTE, read_mask, write_mask, write_object_masks, write_probabilities

    rf = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    direction = Direction(direction)
    plan = session.plan(direction, start)
    names = _frame_names(session, plan)
    wanted = None if names is None else [n for n in names.values() if write is None or write(n)]
    pal = list(palette) if palette is not None else list(DAVIS_PALETTE)
    meta = rf.check(signature, overwrite=overwrite, replace=replace)
    rf.path.mkdir(parents=True, exist_ok=True)
    result = RunResult(total=plan.total)
    record = {"signature": signature, "direction": direction.value, "start": start, "total": plan.total,
              **(info or {})}
    restore: set[str] | None = None
    resume: RunState | None = None
    high = 0
    if meta is not None and meta.get("complete"):
        missing = rf.missing(wanted, probs=save_probs) if wanted is not None else []
        if not missing:
            result.complete_already = True
            result.done = int(meta.get("done", plan.total or 0))
            logger.info("%s holds the complete run already: nothing to do", rf.path)
            return result
        restore = set(missing)
        logger.info("%s: the finished run lacks %d output(s) (%s%s): computing them again", rf.path, len(missing),
                    ", ".join(sorted(missing)[:5]), ", ..." if len(missing) > 5 else "")
    elif meta is not None:
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
    if restore is None:
        rf.write_meta({**record, "complete": False, "done": high})

    def earlier(idx: int) -> np.ndarray | None:
        p = rf.mask_path(names[idx]) if names is not None else None
        return read_mask(p).labels if p is not None and p.exists() else None

    def checkpoint(st: RunState) -> None:
        if restore is None:
            rf.save_state(st, signature, pos)

    pos = plan.done_through(resume.direction, resume.frame) if resume is not None else 0
    done = max(pos, high)
    t0 = time.perf_counter()
    bar = tqdm(total=plan.total, initial=done, unit="frame", desc="segment", disable=not progress,
               dynamic_ncols=True)
    # The engine runs a few frames ahead in a worker thread; writes, state saves and callbacks stay here, in order.
    frames = propagate_ahead(session, direction=direction, start=start, return_probs=save_probs,
                             checkpoint=checkpoint, resume=resume, earlier=earlier)
    try:
        for fr in frames:
            pos += 1
            result.frames += 1
            if restore is None or fr.name in restore:
                if write is None or write(fr.name):
                    if writer is not None:
                        writer(fr, rf.mask_path(fr.name))
                    else:
                        write_mask(rf.mask_path(fr.name), fr.labels, pal)
                    result.written += 1
                if save_probs and fr.prob is not None:
                    write_probabilities(rf.probs_path(fr.name), fr.prob.cpu().numpy(), [0, *fr.object_ids])
                if per_object:
                    write_object_masks(rf.path / "objects", fr.name, fr.labels, fr.object_ids)
                if restore is not None and fr.final:
                    restore.discard(fr.name)
                    result.restored.append(fr.name)
            if pos > done:
                bar.update(pos - done)
                done = pos
            if on_frame is not None:
                on_frame(RunProgress(fr, done, plan.total))
            if restore is not None and not restore:
                break
            if should_stop is not None and should_stop():
                result.stopped = True
                break
    finally:
        frames.close()
        bar.close()
        result.done = done
        result.seconds = time.perf_counter() - t0
        if restore is None:
            rf.write_meta({**record, "complete": False, "done": done})  # the counter never goes back
    if restore is None and not result.stopped:
        rf.write_meta({**record, "complete": True, "done": done, "frames_this_run": result.frames,
                       "seconds": round(result.seconds, 2)})
        rf.state_path.unlink(missing_ok=True)
    if restore is not None:
        logger.info("restored %d missing output(s) in %s", len(result.restored), rf.path)
    return result
