"""Prompt to mask: :class:`PromptPredictor` (our network) and :func:`grabcut_mask` (the OpenCV baseline)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from rdevos.errors import CheckpointError
from rdevos.prompt.encoding import Box, check_prompt, finish_prompt, keep_clicked_parts, prepare_prompt
from rdevos.prompt.model import PromptConfig, PromptNet

__all__ = ["PromptPredictor", "load_prompt_model", "save_prompt_model", "grabcut_mask", "check_prompt"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rdevos-prompt"
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Former private name of :func:`rdevos.prompt.encoding.keep_clicked_parts`.
_keep_clicked_parts = keep_clicked_parts


class PromptPredictor:
    """Turn a box and/or clicks on one frame into an object mask.

    Args:
        net: a :class:`PromptNet` (see :func:`load_prompt_model`).
        device: torch device (default CPU).
        precision: ``"fp32"``, ``"bf16"`` (autocast; fast on CPUs with AMX and on GPUs) or ``"fp16"`` (GPUs).
        keep_clicked: for prompts without a box, keep only the connected parts of the mask that hold a positive
            click (a click selects *that* object; a second part of it is added with a click on it).
    """

    def __init__(self, net: PromptNet, device: torch.device | str = "cpu", precision: str = "fp32",
                 keep_clicked: bool = True) -> None:
        if precision not in _AUTOCAST:
            raise ValueError(f"precision must be one of {sorted(_AUTOCAST)}, not {precision!r}")
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.precision = precision
        self.size = net.config.crop_size
        self.keep_clicked = keep_clicked

    @torch.inference_mode()
    def predict_probs(self, image: np.ndarray, box: Box | Sequence[float] | None = None,
                      points: Sequence[Sequence[float | bool]] = (), prev_mask: np.ndarray | None = None
                      ) -> np.ndarray:
        """Object probability (H, W) float32 for ``image`` (H, W, 3) uint8 RGB.

        Args:
            box: ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive).
            points: clicks ``(x, y)`` or ``(x, y, positive)``; ``x``/``y`` are the pixel's column/row.
            prev_mask: the previous result for this object (H, W), when refining with more clicks.
        """
        prep = prepare_prompt(image, box, points, prev_mask, self.size, self.net.config.context)
        crop = torch.from_numpy(prep.crop)[None].to(self.device)
        prompts = torch.from_numpy(prep.maps)[None].to(self.device)
        dtype = _AUTOCAST[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = self.net(crop, prompts)
        return finish_prompt(torch.sigmoid(logits.float())[0, 0].cpu().numpy(), prep, self.keep_clicked)

    def predict(self, image: np.ndarray, box: Box | Sequence[float] | None = None,
                points: Sequence[Sequence[float | bool]] = (), prev_mask: np.ndarray | None = None) -> np.ndarray:
        """Binary object mask (H, W) bool; arguments as in :meth:`predict_probs`."""
        return self.predict_probs(image, box, points, prev_mask) > 0.5


def save_prompt_model(net: PromptNet, path: str | os.PathLike[str], *, half: bool = False,
                      meta: dict[str, object] | None = None) -> None:
    """Write a prompt-model checkpoint (``half``: store fp16 weights)."""
    from rdevos.hub.convert import _atomic_save  # noqa: PLC0415

    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    _atomic_save({"format": CHECKPOINT_FORMAT, "version": 1, "config": net.config.to_dict(), "state_dict": sd,
                  "meta": dict(meta or {})}, Path(path))


def load_prompt_model(model: str | os.PathLike[str] | None = None) -> PromptNet:
    """Load a prompt-to-mask network: ``None`` (the embedded default), a registry name, a path or URL."""
    from rdevos.hub.registry import resolve_prompt_weights  # noqa: PLC0415

    path = resolve_prompt_weights(model)
    from rdevos.hub.convert import read_tensors  # noqa: PLC0415

    ckpt = read_tensors(path, "prompt model")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an rdevos prompt-model checkpoint (no format={CHECKPOINT_FORMAT!r})")
    try:
        config = PromptConfig(**ckpt["config"])
    except TypeError as e:
        raise CheckpointError(f"{path}: unknown prompt-model config: {e}") from e
    net = PromptNet(config)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: prompt-model keys do not match (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")
    logger.debug("loaded prompt model %s (%s)", Path(path).name, config)
    return net.eval()


def grabcut_mask(image: np.ndarray, box: Box, iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut initialised with ``box`` (the baseline of the evaluation); (H, W) bool."""
    h, w = image.shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    mask = np.zeros((h, w), np.uint8)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return mask.astype(bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    try:
        cv2.grabCut(bgr, mask, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # box covering the whole frame leaves no background model
        mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
