"""The run adapter: background segmentation runs of jobs over :func:`rdevos.segment_to_folder`.

One background thread runs the jobs, one at a time, in submission order. A run takes its settings from the job's
record (:meth:`rdevos_web.store.Job.settings`), which the page's controls edit, so a reload or a server restart
continues a stopped run exactly instead of starting again with other settings. Settings a run cannot use (a
checkpoint that does not exist, a device this server lacks) are refused before the job is queued.

The frame a pass starts from gets what the page shows there (:func:`rdevos_web.store.compose`: the user mask over
the result): a correction drawn for one object on a frame that shows a result propagates with the other objects'
results, which the engine has no memory of when the pass starts on that frame. These start masks are saved in
``run/`` when the run is submitted (the run rewrites the results they come from), so a stopped run continues
with the very masks it started from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

import rdevos
from rdevos import DAVIS_PALETTE, InputError, ModelNotFoundError, RDEVOSError, read_mask, write_mask
from rdevos_web.store import (RECORD_LOCK, Job, JobInfo, JobSettings, JobStatus, RunSettings, compose)
from rdevos_web.uploads import WorkFolder

logger = logging.getLogger(__name__)

__all__ = ["JobManager", "available_devices", "model_problem"]

_MODEL_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")  # a ModelScope id (owner/name)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def available_devices() -> list[str]:
    """The device choices this server can run on: ``auto``, ``cpu`` and the accelerators torch finds."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def model_problem(model: str | None) -> str | None:
    """Why ``model`` cannot be loaded, found without loading or downloading anything (``None``: no reason seen).

    A path that does not exist and the embedded model missing from the install are found at once; URLs and
    ModelScope ids are resolved (downloaded) by the run, which reports their errors.
    """
    from rdevos import DEFAULT_MODEL, resolve_weights

    if model is not None and model != DEFAULT_MODEL:
        path = os.path.expanduser(model)
        if os.path.exists(path) or "://" in model:
            return None
        looks_like_path = (model.lower().endswith(_CHECKPOINT_SUFFIXES) or model.startswith(("/", ".", "~"))
                           or "\\" in model or model.count("/") > 1)
        if looks_like_path or not _MODEL_ID.match(model):
            if looks_like_path:
                return (f"the checkpoint '{model}' does not exist on the server; correct the path under 'Model', "
                        "or leave it empty for the embedded default model")
            try:
                resolve_weights(model, progress=False)  # a registry name: a file check; unknown: an error
            except ModelNotFoundError as e:
                return str(e)
        return None
    try:
        resolve_weights(model, progress=False)  # the embedded model: a file check, no download
    except ModelNotFoundError as e:
        return f"{e} Enter the path of a checkpoint under 'Model'."
    return None


def _signature(job: Job, info: JobInfo, settings: RunSettings, direction: str, start: int | None) -> str:
    """The run's identity: settings, direction, start, and every user mask (pixels and the objects it annotates)."""
    h = hashlib.sha256(json.dumps([asdict(settings), direction, start]).encode())
    for i in job.annotated_frames():
        h.update(f"{i}:{job.annotation_ids(i, info)}".encode())
        h.update((job.annotations_dir / f"{i:05d}.png").read_bytes())
    return h.hexdigest()


def _seed_path(job: Job, frame: int) -> Any:
    return job.run_dir / f"seed-{frame:05d}.png"


def _make_seeds(job: Job, ann: dict[int, list[int]], direction: str, start: int | None,
                num_frames: int) -> dict[str, list[int]]:
    """The start masks of a new run's passes (see the module docstring); written to ``run/``."""
    shutil.rmtree(job.run_dir, ignore_errors=True)
    plan = rdevos.plan_propagation(ann, num_frames, direction, start)
    seeds: dict[str, list[int]] = {}
    for first in sorted({p.first for p in plan.passes}):
        res = job.result(first)
        if res is None:
            continue
        ids = ann.get(first, [])
        labels = compose(res, job.annotation(first), ids)
        assert labels is not None
        shown = {int(v) for v in np.unique(labels) if v}
        if shown <= set(ids):
            continue  # the result adds no object to the user mask there
        job.run_dir.mkdir(parents=True, exist_ok=True)
        write_mask(_seed_path(job, first), labels, DAVIS_PALETTE)
        seeds[str(first)] = sorted(shown | set(ids))
    return seeds


def _annotations(job: Job, info: JobInfo, seeds: dict[str, list[int]]) -> dict[int, list[int]]:
    ann = job.annotation_summary(info)
    ann.update({int(f): list(ids) for f, ids in seeds.items()})
    return ann


class JobManager:
    """Runs segmentation jobs in one background thread, one job at a time, in submission order.

    All state is in the work folder: a page reload, or a new server on the same folder, sees every job. Jobs left
    queued or running by a server that stopped are marked ``interrupted``; :meth:`submit` continues them exactly
    from their last memory update.

    Args:
        work: the work folder.
        settings: default model/device/resolution of runs (a job's own settings, once set, win).
    """

    def __init__(self, work: WorkFolder, settings: RunSettings | None = None) -> None:
        self.work = work
        self.settings = settings or RunSettings()
        #: The run settings of a job that has none of its own.
        self.defaults = JobSettings.of(self.settings)
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
            if info.active and job.id not in self._cancel:
                job.edit(status=JobStatus.INTERRUPTED, eta_s=None,
                         message="the server stopped during this run; press Run to continue it")
                out.append(job.id)
        if out:
            logger.info("jobs interrupted by a server stop: %s", ", ".join(out))
        return out

    def is_active(self, job_id: str) -> bool:
        """Whether the job is queued or running in this process."""
        with self._lock:
            return job_id in self._cancel

    def job_settings(self, job: Job) -> JobSettings:
        """The run settings of a job: its own, over this server's defaults."""
        return job.settings(self.defaults)

    @staticmethod
    def check(settings: RunSettings) -> None:
        """Refuse settings a run could not use, before anything is queued.

        Raises:
            InputError: a checkpoint that does not exist, or a device this server does not have.
        """
        devices = available_devices()
        if settings.device not in devices:
            raise InputError(f"the device '{settings.device}' is not available on this server; choose "
                             f"{' or '.join(devices)} under 'Device'")
        problem = model_problem(settings.model)
        if problem:
            raise InputError(problem)

    def submit(self, job_id: str, *, direction: str | None = None, start: int | None = None,
               settings: RunSettings | None = None) -> JobInfo:
        """Queue a run of a job.

        Args:
            job_id: the job.
            direction: ``forward``, ``backward`` or ``both`` (see :meth:`VideoSession.propagate`; default: the
                job's setting).
            start: start at this annotated frame instead of the first (forward) / last (backward) annotation;
                used to propagate a correction from the frame where it was drawn.
            settings: model/device/resolution (default: the job's).
        Returns:
            The job's info (status ``queued``).
        Raises:
            InputError: no annotation, the start frame has no mask, the settings cannot be used, or the job is
                already queued/running.
        """
        job = self.work.job(job_id)
        own = self.job_settings(job)
        direction = rdevos.Direction(direction or own.direction).value
        settings = settings or own.run
        self.check(settings)
        with RECORD_LOCK, self._lock:
            info = job.info()
            if job_id in self._cancel or info.active:
                raise InputError("this job is already queued or running; cancel it first")
            ann = job.annotation_summary(info)
            if not ann:
                raise InputError("draw or upload a mask on at least one frame before running")
            if start is not None and start not in ann:
                raise InputError(f"frame {start} has no mask: mark the object on it (box, clicks or brush) to "
                                 "propagate from there, or start from the first mask")
            sig = _signature(job, info, settings, direction, start)
            old = info.run or {}
            resumable = (old.get("signature") == sig and job.state_path.exists()
                         and info.status in (JobStatus.CANCELLED, JobStatus.INTERRUPTED, JobStatus.FAILED)
                         and all(_seed_path(job, int(f)).exists() for f in old.get("seeds", {})))
            if resumable:
                seeds = dict(old.get("seeds", {}))
            else:
                job.state_path.unlink(missing_ok=True)
                seeds = _make_seeds(job, ann, direction, start, info.num_frames)
            run = {"direction": direction, "start": start, "signature": sig, "resume": resumable,
                   "mask_version": info.mask_version, "seeds": seeds, **asdict(settings)}
            waiting = bool(self._cancel)  # other jobs queued or running
            total = rdevos.plan_propagation(_annotations(job, info, seeds), info.num_frames, direction, start).total
            info = job.edit(status=JobStatus.QUEUED, run=run, eta_s=None, frames_per_s=0.0,
                            done=info.done if resumable else 0, total=total or 0,
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
        with RECORD_LOCK, self._lock:  # in submit()'s order
            ev = self._cancel.get(job_id)
            if ev is None:
                return job.info()
            ev.set()
            if self._active != job_id:  # the worker skips it (its event is set)
                return job.edit(status=JobStatus.CANCELLED, eta_s=None, message="cancelled before it started")
        return job.update(message="cancelling after the current frame")

    def delete(self, job_id: str) -> None:
        """Delete a job and its files.

        Raises:
            InputError: the job is queued or running (cancel it first), or does not exist.
        """
        with self._lock:
            if job_id in self._cancel:
                raise InputError("this job is queued or running: cancel it before deleting it")
            job = self.work.job(job_id)
            job.forget_history()
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
            model = self._model(settings, device)
            config = rdevos.InferenceConfig.for_model(model.inference_defaults,
                                                      precision=rdevos.default_precision(device),
                                                      resolution=settings.resolution)
            session = rdevos.VideoSession(model, rdevos.FolderSource(job.frames_dir), config, device=device)
            seeds = {int(f): ids for f, ids in (run.get("seeds") or {}).items()}
            for idx, ids in job.annotation_summary(info).items():
                if idx not in seeds:
                    _add_mask(session, idx, job.annotation(idx), ids)
            for idx, ids in seeds.items():
                _add_mask(session, idx, read_mask(_seed_path(job, idx)).labels, ids)
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
                job.edit(status=JobStatus.INTERRUPTED if stopped else JobStatus.CANCELLED, done=res.done,
                         last_frame=clock["last"], eta_s=None,
                         message=f"the server stopped after {res.done} frames; press Run to continue" if stopped
                         else "press Run to continue")
                logger.info("job %s %s after %d frames", job.id, "stopped" if stopped else "cancelled", res.done)
                return
            dt = res.seconds
            fps = res.frames / max(dt, 1e-9)
            job.edit(status=JobStatus.DONE, done=res.done, total=res.total or res.done, frames_per_s=fps, eta_s=0.0,
                     last_frame=clock["last"],
                     message=f"segmented {res.frames} frames in {dt:.1f} s ({fps:.2f} frames/s)")
            logger.info("job %s done: %d frames in %.1f s", job.id, res.frames, dt)
        except RDEVOSError as e:
            logger.warning("job %s failed: %s", job.id, e)
            job.edit(status=JobStatus.FAILED, eta_s=None, message=str(e))
        except Exception as e:  # noqa: BLE001 - shown to the user, traceback in the server log
            logger.exception("job %s failed", job.id)
            job.edit(status=JobStatus.FAILED, eta_s=None,
                     message=f"internal error: {type(e).__name__}: {e} (details in the server log)")


def _add_mask(session: rdevos.VideoSession, idx: int, labels: np.ndarray, ids: list[int]) -> None:
    """Give the run a frame's mask: the objects annotated there are on it or, where the mask lacks them, absent."""
    on = set(np.unique(labels).tolist())
    session.add_mask(idx, labels, obj_ids=[i for i in ids if i in on], absent=[i for i in ids if i not in on])
