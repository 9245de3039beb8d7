"""Device selection shared by the library's entry points."""

from __future__ import annotations

import torch

from rdevos.config import Precision

__all__ = ["resolve_device", "cpu_has_fast_bf16", "default_precision"]


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
