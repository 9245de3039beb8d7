"""Resumable runs: segment a video into a folder of PNGs, one frame at a time, continuing an interrupted run exactly.

The one write loop behind ``rdevos segment``, the web app's jobs and ``rdevos run-dataset``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rdevos.inference.plan import Direction

logger = logging.getLogger(__name__)

__all__ = ["RunState"]


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
