"""Device selection shared by the library's entry points."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from dataclasses import dataclass

import torch

from rdevos.config import Precision

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "cpu_has_fast_bf16", "default_precision", "tune_cpu_allocator", "ThreadPlan",
           "thread_plan"]

#: Environment variable that turns :func:`tune_cpu_allocator` off (``0``).
ALLOCATOR_ENV = "RDEVOS_MALLOC_TUNING"
_ALLOCATOR_BYTES = 1 << 30
_allocator_tuned: bool | None = None


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls/convolutions natively (AMX or AVX512-BF16).

    Without, oneDNN emulates bf16 and is ~10x slower than fp32 (measured on an AVX2-only EPYC).
    """
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())  # type: ignore[union-attr]
    except AttributeError:
        return False


def default_precision(device: torch.device) -> Precision:
    """Fastest sensible inference precision: fp16 on CUDA, bf16 on CPUs with native bf16, fp32 otherwise."""
    if device.type == "cuda":
        return Precision.FP16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return Precision.BF16
    return Precision.FP32


def tune_cpu_allocator() -> bool:
    """Keep large CPU tensors in glibc's heap between frames instead of mapping and unmapping them per allocation.

    glibc serves allocations above its mmap threshold (dynamic, at most 32 MiB) with fresh ``mmap`` pages and
    returns freed heap tops above the trim threshold to the system, so every frame page-faults its large activations
    (480p stride-2 and stride-4 feature maps are 20-60 MB) again. Raising both thresholds to 1 GiB
    (``mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)``) lets freed tensors be reused: 20-30 % less time per frame for
    the embedded model on CPU, the same peak RSS (AMD EPYC, 1 thread; ``benchmarks/bench_allocator.py``). Freed
    memory stays with the process (as with a caching allocator) instead of going back to the system.

    Threads share the one heap (``M_ARENA_MAX`` 1): glibc gives each new thread its own arena otherwise, whose
    64 MiB heaps are mapped and unmapped as a 480p frame's tensors come and go, so the engine's worker threads
    (:mod:`rdevos.inference.pipelining`) page-faulted some 80 MB a frame again; with one arena they fault none.
    Call it before threads that allocate tensors start.

    Process-wide, once; Linux with glibc only. ``RDEVOS_MALLOC_TUNING=0`` turns it off. Returns whether it is on.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get(ALLOCATOR_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        logger.debug("CPU allocator tuning off (%s)", ALLOCATOR_ENV)
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
        ok = mallopt(m_mmap_threshold, _ALLOCATOR_BYTES) == 1 and mallopt(m_trim_threshold, _ALLOCATOR_BYTES) == 1 \
            and mallopt(m_arena_max, 1) == 1
    except (OSError, AttributeError) as exc:
        logger.debug("CPU allocator tuning unavailable: %s", exc)
        return False
    _allocator_tuned = bool(ok)
    logger.debug("CPU allocator tuning: glibc mmap/trim thresholds %s", "1 GiB, one arena" if ok
                 else "unchanged (mallopt failed)")
    return _allocator_tuned


@dataclass(frozen=True)
class ThreadPlan:
    """How a run's engine uses the CPU threads it is given (see :func:`thread_plan`).

    Attributes:
        threads: the threads it was given.
        stages: 1: one thread runs the whole engine; 2: the key encoder (with the frame decoding) runs a frame
            ahead in a second thread, overlapping the memory read and decoder of the frame before.
        intra_op: torch threads (``torch.set_num_threads``) of each stage's thread: the same in both, so every
            operation computes with the same number of threads whichever thread runs it (results can depend on it
            in the last bits).
    """

    threads: int
    stages: int
    intra_op: int


def thread_plan(threads: int | None = None) -> ThreadPlan:
    """The engine's thread policy for a run (``rdevos segment``, :func:`~rdevos.inference.runs.segment_to_folder`).

    ``threads`` (default: ``torch.get_num_threads()``, i.e. the cores, ``OMP_NUM_THREADS`` or what
    ``torch.set_num_threads``/``--threads`` set): 1 gives one stage with one torch thread; 2 or 3 give two stages
    (the key encoder, with the frame decoding, a frame ahead in its own thread) with one torch thread each; 4 or more
    two stages with ``threads // 2`` torch threads each. Never one stage with several torch threads: such an
    operation waits at every barrier for its slowest thread, and on a busy 2-core machine two torch threads ran the
    embedded model 1.3-3.4x slower than one (Intel Xeon, load 3-13). Two single-threaded stages need no lock-step:
    on the quiet 2-core Xeon they ran a frame in 0.377 s against 0.499 s for one stage (one torch thread: 1.32x),
    and where they do not pay (a busy machine) :class:`~rdevos.inference.pipelining.StageChooser`, which times both
    modes while a run goes, falls back to one stage. The mode never changes the results.
    """
    import torch

    n = torch.get_num_threads() if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if n == 1:
        return ThreadPlan(1, 1, 1)
    return ThreadPlan(n, 2, n // 2)  # 2 or 3 threads: one torch thread a stage
