"""Prompt to mask: turn a box and/or clicks on one frame into an object mask (the start of a video run).

>>> from rdevos.prompt import load_prompt_predictor
>>> predictor = load_prompt_predictor()           # the embedded default model
>>> mask = predictor.predict(frame, box=(120, 40, 380, 300), points=[(200, 150, True)])
"""

from __future__ import annotations

import torch

from rdevos.prompt.clicks import first_click, iou, next_click
from rdevos.prompt.encoding import Box, Point
from rdevos.prompt.model import PromptConfig, PromptNet
from rdevos.prompt.objects import ObjectPrompt, prompts_to_labels
from rdevos.prompt.predictor import PromptPredictor, check_prompt, grabcut_mask, load_prompt_model, save_prompt_model

__all__ = ["PromptPredictor", "PromptNet", "PromptConfig", "load_prompt_model", "load_prompt_predictor",
           "save_prompt_model", "grabcut_mask", "check_prompt", "next_click", "first_click", "iou", "Box", "Point", "ObjectPrompt", "prompts_to_labels"]


def load_prompt_predictor(model: str | None = None, *, device: torch.device | str | None = None,
                          precision: str | None = None) -> PromptPredictor:
    """A ready :class:`PromptPredictor`: ``model`` as in :func:`load_prompt_model`; device ``None``/``"auto"``
    picks CUDA, MPS or CPU; precision ``None`` picks bf16 where it is fast (CUDA, CPUs with AMX/AVX512-BF16)."""
    from rdevos.device import default_precision, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    if precision is None:
        precision = str(default_precision(dev).value)
    return PromptPredictor(load_prompt_model(model), dev, precision)
