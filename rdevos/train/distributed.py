"""torchrun helpers: read the environment and init the process group inside the entry function, never at import.

One code path serves CPU, one GPU and ``torchrun --nproc_per_node N``: with ``WORLD_SIZE`` unset or 1 nothing is
initialised and every helper is a no-op.
"""

from __future__ import annotations

import datetime
import inspect
import warnings
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = ["DistInfo", "init_distributed", "shutdown_distributed", "barrier", "is_main", "wrap_ddp",
           "all_reduce_mean", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    initialized: bool = False  #: this call created the process group (so it should destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def init_distributed(device_type: str) -> DistInfo:
    """Read ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` and initialise the process group when WORLD_SIZE > 1.

    Backend: nccl for CUDA, gloo otherwise. On CUDA the process's device is set to ``cuda:LOCAL_RANK``.
    An already initialised group is reused (and not destroyed by :func:`shutdown_distributed`).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), local_world, False)
    if world <= 1:
        return DistInfo(0, 0, 1, 1, False)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    logger.info("process group ready: rank %d/%d (local %d), backend %s", rank, world, local_rank, backend)
    return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), local_world, True)


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Synchronise all ranks (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Wrap in DistributedDataParallel when distributed (``broadcast_buffers=False``, as the reference: BN runs in
    eval mode, so its buffers never change and need no broadcast)."""
    if not info.distributed:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # channels_last 1x1 conv weights have ambiguous strides; their gradients get one extra copy into the bucket.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        # Newer torch renamed the switch (it still syncs once at init: harmless, every rank builds the same weights).
        return ddp(model, device_ids=ids, forward_sync_buffers=False)
    return ddp(model, device_ids=ids, broadcast_buffers=False)


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalars over ranks (for logging); identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to all ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
