"""Weights: registry, downloads, checkpoint formats, and :func:`load_model`."""

from __future__ import annotations

import os

import torch

from rdevos.config import ModelConfig
from rdevos.device import resolve_device
from rdevos.hub.convert import load_network, save_checkpoint, save_modelscope_dir
from rdevos.hub.registry import DEFAULT_MODEL, MODELSCOPE_ID, list_models, resolve_weights
from rdevos.model.network import RDEVOS

__all__ = ["load_model", "save_checkpoint", "save_modelscope_dir", "list_models", "resolve_weights",
           "DEFAULT_MODEL", "MODELSCOPE_ID"]


def load_model(model: str | os.PathLike[str] | None = None, *, device: torch.device | str | None = "cpu",
               config: ModelConfig | None = None, progress: bool = True) -> RDEVOS:
    """Load an RDE-VOS network in eval mode.

    Args:
        model: ``None`` for the embedded default model; a path to an official ``.pth``, a ModelScope model
            directory or an rdevos checkpoint; a registry name; an http(s) URL (``#sha256=`` checked); or a
            ModelScope model id such as ``damo/cv_rdevos_video-object-segmentation``.
        device: where to put the weights (``"auto"`` picks CUDA, MPS or CPU).
        config: override the architecture (default: stored in the checkpoint or inferred).
    """
    net = load_network(resolve_weights(model, progress=progress), config)
    return net.to(resolve_device(device))
