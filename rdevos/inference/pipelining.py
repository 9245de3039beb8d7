"""Run the engine in worker threads, a few frames ahead of the code that writes its results.

:func:`propagate_ahead` is :meth:`VideoSession.propagate` with up to three threads instead of one
(:func:`~rdevos.device.thread_plan` decides):

* an encoder thread decodes the frames and runs the key encoder a frame ahead (:func:`encode_ahead`; the key
  features do not depend on the memory), when the run has two stages and :class:`StageChooser` measures that it pays;
* the engine thread reads the memory, decodes the masks, updates the memory and hands each result over a bounded
  queue;
* the caller's thread consumes the results in order: writes PNGs, saves resume states, reports progress.

Order and side effects are those of the sequential generator: the ``checkpoint`` callback (the resume-state save)
runs in the caller's thread, after the results yielded before it, and ``earlier`` (reading back a result the run
wrote) runs there too, once everything before it is consumed. So a resume state is never saved before the results
it covers are written, and a write error stops the run at that frame, as it does without threads. An exception
in a worker thread is raised in the caller's thread, at the result where it happened. Closing the iterator (or
stopping early) stops the workers; results computed ahead and not consumed are dropped, not written.

Every operation computes with the same number of torch threads whichever thread runs it, so the results are those
of the sequential generator at that thread count, byte for byte. The decoding (Pillow, PyAV), the network (torch)
and the PNG encoding (zlib) release the GIL, so the threads run in parallel.

``RDEVOS_PIPELINE=0`` turns the worker threads off: the caller's thread runs :meth:`VideoSession.propagate` with
its own torch threads, as before.
"""

from __future__ import annotations

import logging
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np

    from rdevos.device import ThreadPlan
    from rdevos.inference.engine import InferenceEngine
    from rdevos.inference.session import SegmentedFrame, VideoSession

logger = logging.getLogger(__name__)

__all__ = ["Ahead", "StageChooser", "encode_ahead", "propagate_ahead", "pipeline_depth", "DEFAULT_DEPTH",
           "PIPELINE_ENV"]

T = TypeVar("T")

#: Results (and encoded frames) a worker may hold ahead of its consumer.
DEFAULT_DEPTH = 2
#: Environment variable that turns the worker threads off (``0``): the caller's thread does everything.
PIPELINE_ENV = "RDEVOS_PIPELINE"
_POLL_S = 0.1


class _Stopped(BaseException):
    """Unwinds a worker whose consumer stopped (never seen by callers)."""


class _Reply:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Ahead(Generic[T]):
    """Iterate a generator in a worker thread, up to ``depth`` items ahead of the consumer.

    Args:
        start: called in the worker with ``(defer, call)``; returns the iterator to run. ``defer(fn)`` and
            ``call(fn)`` wrap callbacks the iterator makes: a deferred call runs in the consumer's thread, in order
            with the items (after those yielded before it), without waiting; a ``call`` waits until the consumer has
            taken everything before it, runs there and returns its result (or raises its exception) in the worker.
        depth: queue length (>= 1).
        name: the worker thread's name.

    The consumer iterates this object; :meth:`close` (also on ``with`` exit) stops and joins the worker.
    """

    def __init__(self, start: Callable[..., Iterator[T]], depth: int = DEFAULT_DEPTH, *,
                 name: str = "rdevos-ahead") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._start = start
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ worker side
    def _put(self, entry: tuple[Any, ...]) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _defer(self, fn: Callable[..., Any] | None) -> Callable[..., None] | None:
        if fn is None:
            return None

        def deferred(*args: Any, **kwargs: Any) -> None:
            self._put(("defer", fn, args, kwargs))

        return deferred

    def _call(self, fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if fn is None:
            return None

        def called(*args: Any, **kwargs: Any) -> Any:
            reply = _Reply()
            self._put(("call", fn, args, kwargs, reply))
            while not reply.done.wait(_POLL_S):
                if self._stop.is_set():
                    raise _Stopped
            if reply.error is not None:
                raise reply.error
            return reply.value

        return called

    def _produce(self) -> None:
        try:
            it = self._start(self._defer, self._call)  # type: ignore[arg-type]
            try:
                for item in it:
                    self._put(("item", item))
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            self._put(("end",))
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            try:
                self._put(("error", e))
            except _Stopped:
                pass

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> Ahead[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        while True:
            entry = self._queue.get()
            kind = entry[0]
            if kind == "item":
                return entry[1]  # type: ignore[no-any-return]
            if kind == "defer":
                entry[1](*entry[2], **entry[3])
            elif kind == "call":
                fn, args, kwargs, reply = entry[1:]
                try:
                    reply.value = fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - raised in the worker, where the sequential code raises it
                    reply.error = e
                reply.done.set()
            elif kind == "error":
                self._finished = True
                self._thread.join()
                raise entry[1]
            else:  # end
                self._finished = True
                self._thread.join()
                raise StopIteration

    def close(self) -> None:
        """Stop the worker (dropping what it computed ahead) and wait for it; idempotent."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                entry = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if entry[0] == "call":
                entry[-1].error = _Stopped()
                entry[-1].done.set()
        self._thread.join()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StageChooser:
    """Whether the key encoder runs ahead in its own thread (two stages) or in the engine's: the faster, measured.

    The engine's thread reports the time between the frames it takes (:meth:`record`); the encoder thread reads
    :attr:`ahead` before each frame. After ``warmup`` frames each mode is timed for ``window`` frames (the median
    period: memory-update frames and spikes do not decide) and the faster is kept; after ``period`` frames the other
    is timed again, and the period doubles (up to ``max_period``) while the choice stands. A frame encoded in the
    other mode than the one being timed (in flight while the mode changed) is not counted, nor the first one after
    a change. The mode never changes the results, only the time.
    """

    def __init__(self, *, window: int = 5, warmup: int = 2, period: int = 40, max_period: int = 640) -> None:
        if window < 1 or warmup < 0 or period < 1 or max_period < period:
            raise ValueError("need window >= 1, warmup >= 0, 1 <= period <= max_period")
        self.window, self.period, self.max_period, self._first_period = window, period, max_period, period
        self.ahead = True  #: the mode the encoder thread uses for its next frame
        self.choice: bool | None = None  #: the mode chosen by the last comparison (``None``: not compared yet)
        self.medians: dict[bool, float] = {}  #: median frame period of each mode at the last comparison
        self._skip = warmup
        self._samples: list[float] = []
        self._recent: list[float] = []  # the chosen mode's last periods, while it runs
        self._left = 0  # frames until the next comparison (running phase)
        self._probing = True
        self._fresh: dict[bool, float] = {}

    def record(self, seconds: float, ahead: bool) -> None:
        """One frame's period: the time since the engine took the frame before, encoded ahead or not."""
        if ahead != self.ahead:  # in flight from before the last change
            return
        if self._skip:
            self._skip -= 1
            return
        if not self._probing:
            self._recent = (self._recent + [seconds])[-self.window:]
            self._left -= 1
            if self._left <= 0:  # time the other mode again
                self._fresh = {self.ahead: statistics.median(self._recent)}
                self._switch(not self.ahead, probing=True)
            return
        self._samples.append(seconds)
        if len(self._samples) < self.window:
            return
        self._fresh[self.ahead] = statistics.median(self._samples)
        self._samples = []
        if (not self.ahead) not in self._fresh:
            self._switch(not self.ahead, probing=True)
            return
        best = self._fresh[True] <= self._fresh[False]
        self.period = min(2 * self.period, self.max_period) if best == self.choice else self._first_period
        self.choice, self.medians = best, dict(self._fresh)
        logger.debug("key encoder %s: median frame %.3f s ahead, %.3f s inline; next check in %d frames",
                     "ahead" if best else "inline", self._fresh[True], self._fresh[False], self.period)
        self._left, self._recent = self.period, []
        self._switch(best, probing=False)

    def _switch(self, ahead: bool, *, probing: bool) -> None:
        self._skip = 1 if ahead != self.ahead else 0
        self.ahead, self._probing = ahead, probing


_local = threading.local()  # the engine thread's ThreadPlan, set by propagate_ahead for encode_ahead


def encode_ahead(engine: InferenceEngine, frames: Iterable[tuple[int, str, np.ndarray]]
                 ) -> Iterator[tuple[int, str, object]]:
    """``frames`` with each image encoded (:meth:`InferenceEngine.encode`) a frame ahead in another thread.

    Only in the engine thread of :func:`propagate_ahead` with a two-stage :func:`~rdevos.device.thread_plan`;
    elsewhere ``frames`` pass through unchanged (the engine encodes each image in its ``step``). The encoder thread
    decodes the frames too; a :class:`StageChooser` switches it to decoding only when that is faster.
    """
    plan: ThreadPlan | None = getattr(_local, "plan", None)
    if plan is None or plan.stages < 2:
        yield from frames
        return
    from rdevos.inference.engine import EncodedFrame

    chooser = StageChooser()

    def start(_defer: object, _call: object) -> Iterator[tuple[int, str, object]]:
        import torch

        torch.set_num_threads(plan.intra_op)
        for idx, name, image in frames:
            yield idx, name, engine.encode(image) if chooser.ahead else image

    ahead = Ahead(start, _local.depth, name="rdevos-encoder")
    try:
        last: tuple[float, bool] | None = None
        for item in ahead:
            now, encoded = time.perf_counter(), isinstance(item[2], EncodedFrame)
            if last is not None and last[1] == encoded:
                chooser.record(now - last[0], encoded)
            last = (now, encoded)
            yield item
    finally:
        ahead.close()
        _local.chooser = chooser  # the last run's choice, for benchmarks and tests


def pipeline_depth() -> int:
    """Results and frames held ahead by :func:`propagate_ahead`: :data:`DEFAULT_DEPTH`, or 0 (no worker threads)
    when the environment variable ``RDEVOS_PIPELINE`` is ``0``."""
    off = os.environ.get(PIPELINE_ENV, "1").strip().lower() in ("0", "false", "no", "off")
    return 0 if off else DEFAULT_DEPTH


def propagate_ahead(session: VideoSession, *, depth: int | None = None, threads: int | None = None,
                    **kwargs: Any) -> Iterator[SegmentedFrame]:
    """:meth:`VideoSession.propagate` with the engine in worker threads, ahead of the caller.

    Takes the same keyword arguments and yields the same results in the same order. ``checkpoint`` runs in the
    caller's thread after the results before it are consumed; ``earlier`` runs there too, after everything before
    it is consumed (it reads results the caller wrote).

    Args:
        depth: results (and encoded frames) held ahead (default :func:`pipeline_depth`); 0: the plain generator in
            the caller's thread, with the caller's torch threads (no worker threads).
        threads: CPU threads for the engine, split by :func:`~rdevos.device.thread_plan` (default: the caller's
            ``torch.get_num_threads()``).
    Returns:
        An iterator with ``close()``: call it when done (it stops the workers; what they computed ahead is dropped).
    """
    depth = pipeline_depth() if depth is None else depth
    if depth == 0:
        return session.propagate(**kwargs)
    import torch

    from rdevos.device import resolve_device, thread_plan, tune_cpu_allocator

    if resolve_device(session.device).type == "cpu":
        tune_cpu_allocator()  # before the threads start: they share one heap
    plan = thread_plan(threads)
    before = torch.get_num_threads()
    checkpoint, earlier = kwargs.pop("checkpoint", None), kwargs.pop("earlier", None)

    def start(defer: Callable[..., Any], call: Callable[..., Any]) -> Iterator[SegmentedFrame]:
        _local.plan, _local.depth = plan, depth
        # This thread's torch threads (and its encoder thread's, which starts from them). torch also keeps the
        # number as the default of threads started later, so it is put back at the end.
        torch.set_num_threads(plan.intra_op)
        try:
            yield from session.propagate(checkpoint=defer(checkpoint), earlier=call(earlier), **kwargs)
        finally:
            torch.set_num_threads(before)

    return Ahead(start, depth, name="rdevos-engine")
