"""Box and click prompts on a job's frame -> that frame's user mask, with the prompt model loaded once.

A prompt belongs to one object on one frame: a box, then + / - clicks that refine it. The page keeps the prompt so
far (:class:`PromptState`) and sends each new box or click; :meth:`PromptService.apply` turns the whole prompt into
the object's mask on that frame and stores it at once (only that object's mask changes), so the mask is shown (and
kept) as the user goes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rdevos import InputError
from rdevos_web.store import Job

logger = logging.getLogger(__name__)

__all__ = ["PromptState", "PromptService", "Predictor"]


class Predictor(Protocol):
    """What :class:`PromptService` needs of :class:`rdevos.prompt.PromptPredictor`."""

    def predict(self, image: np.ndarray, box: Any = None, points: Any = (), prev_mask: Any = None) -> np.ndarray:
        ...


@dataclass
class PromptState:
    """The prompt so far of one object on one frame of one job."""

    job: str
    frame: int
    obj: int
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float, bool]] = field(default_factory=list)

    def matches(self, job: str, frame: int, obj: int) -> bool:
        return (self.job, self.frame, self.obj) == (job, frame, obj)


class PromptService:
    """Runs prompts for the page; the predictor is loaded on first use and kept.

    Args:
        model: prompt-model checkpoint, registry name or URL (``None`` = the embedded default).
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        predictor: a ready predictor (tests); skips loading.
    """

    def __init__(self, model: str | None = None, device: str = "auto", predictor: Predictor | None = None) -> None:
        self.model = model
        self.device = device
        self._predictor = predictor
        self._lock = threading.Lock()

    def predictor(self) -> Predictor:
        """The predictor (loaded once; later calls reuse it)."""
        with self._lock:
            if self._predictor is None:
                from rdevos import load_prompt_predictor

                t0 = time.perf_counter()
                self._predictor = load_prompt_predictor(self.model, device=self.device)
                logger.info("prompt model %s loaded in %.1f s", self.model or "(embedded default)",
                            time.perf_counter() - t0)
            return self._predictor

    def apply(self, job: Job, state: PromptState | None, frame: int, obj: int, *,
              box: tuple[float, float, float, float] | None = None,
              point: tuple[float, float, bool] | None = None) -> tuple[PromptState, bool]:
        """Add a box (which starts the prompt afresh) or a click to the prompt of ``obj`` on ``frame``.

        The prompt's mask becomes ``obj``'s mask on the frame (:meth:`Job.edit_object_mask`): the other objects'
        masks there, the user's or the run's, are unchanged.

        Returns:
            The prompt state and whether the mask changed. A click that leaves the mask as it was (one the model
            ignores) is not kept: the state returned is the one before it.
        Raises:
            InputError: the prompt is not usable (outside the frame, a minus click with nothing to remove, an empty
                result), or the job's masks cannot change now (a run is in progress); the mask is then unchanged.
        """
        if state is None or not state.matches(job.id, frame, obj):
            state = PromptState(job.id, frame, obj)
        if box is not None:
            new = PromptState(job.id, frame, obj, box=tuple(float(v) for v in box))  # type: ignore[arg-type]
        elif point is not None:
            new = PromptState(job.id, frame, obj, state.box, [*state.points, point])
        else:
            raise InputError("draw a box or click on the object")
        shown, _ = job.shown(frame)
        prev = None
        if new.box is None and shown is not None and (shown == obj).any():
            prev = shown == obj  # clicks without a box refine the object's current mask
        if new.box is None and prev is None and not any(p[2] for p in new.points):
            raise InputError("a minus click removes part of an object's mask, and this object has none on this "
                             "frame yet: draw a box around it or click on it first")
        image = job.frame(frame)
        t0 = time.perf_counter()
        mask = np.asarray(self.predictor().predict(image, new.box, new.points, prev), bool)
        logger.debug("prompt on job %s frame %d object %d: %.2f s", job.id, frame, obj, time.perf_counter() - t0)
        if not mask.any():
            raise InputError("the prompt gave an empty mask: draw the box around the object or click on it")
        what = "box" if box is not None else "click"
        if not job.edit_object_mask(frame, obj, mask, what=what):
            return (new if box is not None else state), False  # a box stays the prompt; an idle click is dropped
        return new, True
