"""Pure-Python bookkeeping of the streaming engine, shared by the PyTorch engine and the torch-free export runtime.

When memory is due, the channel order of the object groups, and the checks on a mask's object ids: the one copy
of these rules. It imports only the standard library, so an ONNX export ships it next to ``rdevos_runtime.py`` as
``rdevos_bookkeeping.py`` and the exported engine follows exactly the same rules without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

if __name__.startswith("rdevos."):
    from rdevos.errors import InputError, RDEVOSError
else:  # shipped as rdevos_bookkeeping.py beside an export: the rdevos package (and torch) may be absent

    class RDEVOSError(Exception):  # type: ignore[no-redef]
        """Base class of all rdevos errors."""

    class InputError(RDEVOSError, ValueError):  # type: ignore[no-redef]
        """Bad user input."""


__all__ = ["memory_due", "channel_order", "mask_object_ids", "new_object_ids", "InputError", "RDEVOSError",
           "SHIPPED_NAME"]

#: The file name of this module inside an export folder.
SHIPPED_NAME = "rdevos_bookkeeping.py"


def memory_due(t: int, last_mem_t: int, mem_every: int, schedule: str) -> bool:
    """Whether frame ``t`` (without a mask) goes into memory.

    Args:
        t: index of the frame in the engine's stream (0-based).
        last_mem_t: the frame that last went into memory.
        mem_every: the memory interval.
        schedule: ``"absolute"`` (every ``mem_every``-th frame of the stream) or ``"relative"`` (``mem_every``
            frames after the last memory frame, as YouTube-VOS's protocol).
    """
    if schedule == "absolute":
        return t % mem_every == 0
    if schedule == "relative":
        return t - last_mem_t >= mem_every
    raise ValueError(f"unknown memory schedule {schedule!r}")


def channel_order(groups: Sequence[Sequence[int]], object_ids: Sequence[int]) -> list[int] | None:
    """Indices that put the groups' concatenated outputs into ``object_ids`` order (``None``: already in order).

    Args:
        groups: object ids of each group, in group order (their outputs are concatenated in this order).
        object_ids: the engine's object order (output channel ``i + 1`` = ``object_ids[i]``).
    Returns:
        ``inv`` with ``out[i] = concatenated[inv[i]]``.
    """
    pos = {oid: i for i, oid in enumerate(object_ids)}
    order = [pos[i] for g in groups for i in g]
    if order == list(range(len(order))):
        return None
    inv = [0] * len(order)
    for src, dst in enumerate(order):
        inv[dst] = src
    return inv


def mask_object_ids(present: Iterable[int], objects: Iterable[int] | None) -> list[int]:
    """The object ids a mask annotates: ``objects`` if given, else its non-zero labels (``present``).

    Raises:
        InputError: no object, or an id that is not a positive integer (0 is the background).
    """
    ids = [int(v) for v in present if int(v) != 0] if objects is None else [int(i) for i in objects]
    if not ids:
        raise InputError("the mask has no object (all pixels are background)")
    bad = [i for i in ids if i <= 0]
    if bad:
        raise InputError(f"object ids must be positive integers (0 is background), got {ids}")
    return list(dict.fromkeys(ids))


def new_object_ids(ids: Iterable[int], known: Iterable[int]) -> list[int]:
    """The ids of ``ids`` not yet tracked, in order, each once."""
    seen = set(known)
    return [i for i in dict.fromkeys(ids) if i not in seen]
