"""Device selection shared by the library's entry points."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

import torch

from rdevos.config import Precision

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "cpu_has_fast_bf16", "default_precision", "tune_cpu_allocator"]

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
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = mallopt(m_mmap_threshold, _ALLOCATOR_BYTES) == 1 and mallopt(m_trim_threshold, _ALLOCATOR_BYTES) == 1
    except (OSError, AttributeError) as exc:
        logger.debug("CPU allocator tuning unavailable: %s", exc)
        return False
    _allocator_tuned = bool(ok)
    logger.debug("CPU allocator tuning: glibc mmap/trim thresholds %s", "1 GiB" if ok else "unchanged (mallopt failed)")
    return _allocator_tuned
