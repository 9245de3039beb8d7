"""Several objects' prompts on one frame -> one label map (what a first-frame mask is)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rdevos.errors import InputError
from rdevos.prompt.encoding import Box, Point
from rdevos.prompt.predictor import PromptPredictor

__all__ = ["ObjectPrompt", "prompts_to_labels"]


@dataclass
class ObjectPrompt:
    """One object's prompt: a box and/or clicks ``(x, y, positive)``."""

    box: Box | None = None
    points: list[Point] = field(default_factory=list)


def prompts_to_labels(predictor: PromptPredictor, image: np.ndarray, prompts: Mapping[int, ObjectPrompt],
                      base: np.ndarray | None = None) -> np.ndarray:
    """Label map (H, W) uint8 with each object's id where the prompt model puts it.

    Where objects overlap, the pixel goes to the most confident one. ``base`` (an existing label map) keeps its
    other objects; the prompted ids replace theirs.
    """
    h, w = image.shape[:2]
    if base is not None and base.shape != (h, w):
        raise InputError(f"the existing mask is {base.shape[0]}x{base.shape[1]} (HxW), the frame is {h}x{w}")
    labels = np.zeros((h, w), np.uint8) if base is None else base.astype(np.uint8).copy()
    ids = sorted(prompts)
    for i in ids:
        if not 1 <= i <= 255:
            raise InputError(f"object ids are 1..255, got {i}")
    probs = []
    for i in ids:
        p = prompts[i]
        prev = None if base is None or p.box is not None or not (base == i).any() else base == i
        probs.append(predictor.predict_probs(image, p.box, p.points, prev))
    labels[np.isin(labels, ids)] = 0
    if probs:
        stack = np.stack(probs)
        best = stack.argmax(0)
        fg = stack.max(0) > 0.5
        labels[fg] = np.asarray(ids, np.uint8)[best[fg]]
    return labels
