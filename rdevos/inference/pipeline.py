"""ModelScope-compatible ``pipeline('video-object-segmentation', model=...)`` on top of the streaming engine.

Same input and output keys as ModelScope (``{'images': [PIL...], 'mask': PIL}`` -> ``{'masks': uint8 [T, H, W]}``)
and, for weights without settings of their own (the official ones), the same defaults (short side 480, top-k 20,
memory every 4th frame); the embedded model brings its own (short side 540, top-k 20, memory every 10th frame), and
a named ``preset`` replaces them (:meth:`~rdevos.config.InferenceConfig.for_model`). One difference, on purpose: the output
holds the user's own label values (a mask with labels {3, 7} gives 3 and 7 back), where ModelScope returns the
indices 0..K of the sorted labels. Pass ``modelscope_labels=True`` to get ModelScope's indices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rdevos.config import InferenceConfig, Precision
from rdevos.device import resolve_device
from rdevos.errors import InputError
from rdevos.inference.engine import InferenceEngine
from rdevos.io.masks import validate_mask
from rdevos.model.network import RDEVOS

logger = logging.getLogger(__name__)

__all__ = ["pipeline", "VideoObjectSegmentationPipeline", "masks_visualization", "TASK"]

TASK = "video-object-segmentation"
_MASKS = "masks"


def _frame_array(img: Any, i: int) -> np.ndarray:
    if hasattr(img, "convert") and hasattr(img, "mode"):
        return np.asarray(img.convert("RGB"))
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            return np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim == 3 and img.shape[2] in (3, 4):
            return img[:, :, :3]
        raise InputError(f"frame {i}: expected an HxWx3 array, got shape {img.shape}")
    raise InputError(f"frame {i}: unsupported type {type(img).__name__} (give PIL images or HxWx3 uint8 arrays)")


class VideoObjectSegmentationPipeline:
    """Callable pipeline: ``seg({'images': frames, 'mask': first_mask})['masks']``.

    Args:
        model: a loaded :class:`RDEVOS`.
        config: inference settings; the defaults are ModelScope's.
        device: where to run (``None``/``"auto"``: CUDA, MPS or CPU).
        modelscope_labels: return 0..K indices of the sorted labels as ModelScope does, instead of the user's labels.
    """

    def __init__(self, model: RDEVOS, config: InferenceConfig | None = None, *,
                 device: torch.device | str | None = None, modelscope_labels: bool = False,
                 progress: bool = False) -> None:
        self.model = model
        self.config = config or InferenceConfig()
        self.device = resolve_device(device)
        self.modelscope_labels = modelscope_labels
        self.progress = progress

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Segment a video.

        Args:
            inputs: ``{'images': sequence of T RGB frames (PIL or HxWx3 uint8), 'mask': first-frame label mask
                (PIL image in any mode :func:`~rdevos.io.masks.read_mask` reads, colour masks included, a path, or
                an HxW array) of the frame size}``. The mask is checked by :func:`~rdevos.io.masks.validate_mask`,
                the rule of ``rdevos segment --mask``: one a few pixels off the frame size is resized, with a
                warning.
        Returns:
            ``{'masks': uint8 array [T, H, W]}`` with the input mask's label values (0 = background).
        """
        if not isinstance(inputs, Mapping) or "images" not in inputs or "mask" not in inputs:
            raise InputError("input must be a dict with keys 'images' (list of frames) and 'mask' (first-frame mask)")
        images: Sequence[Any] = inputs["images"]
        if images is None or len(images) == 0:
            raise InputError("'images' is empty: the video has no frames")
        first = _frame_array(images[0], 0)
        h, w = first.shape[:2]
        mask = validate_mask(inputs["mask"], (h, w), name="the mask").labels
        labels = np.unique(mask)
        labels = labels[labels != 0]
        engine = InferenceEngine(self.model, self.config, device=self.device)
        out = np.empty((len(images), h, w), dtype=np.uint8)
        lut = torch.tensor(np.concatenate([[0], np.arange(1, labels.size + 1) if self.modelscope_labels else labels]),
                           dtype=torch.uint8, device=self.device)
        from tqdm.auto import tqdm

        for t in tqdm(range(len(images)), desc="segment", unit="frame", disable=not self.progress):
            frame = first if t == 0 else _frame_array(images[t], t)
            if frame.shape[:2] != (h, w):
                raise InputError(f"frame {t} has size {frame.shape[0]}x{frame.shape[1]}, but frame 0 has {h}x{w}; "
                                 "all frames must have the same size")
            prob = engine.step(frame, mask if t == 0 else None, objects=labels.tolist() if t == 0 else None,
                               is_last=t == len(images) - 1)
            # engine ids are the labels in sorted order, so argmax index i maps to labels[i-1].
            out[t] = lut[prob.argmax(dim=0)].cpu().numpy()
        return {_MASKS: out}


def pipeline(task: str = TASK, model: str | os.PathLike[str] | RDEVOS | None = None, *, top_k: int | None = None,
             mem_every: int | None = None, resolution: int | None | str = "default", device: torch.device | str | None = None,
             precision: str | Precision = Precision.FP32, preset: str | None = None, modelscope_labels: bool = False,
             progress: bool = False) -> VideoObjectSegmentationPipeline:
    """Create a video object segmentation pipeline (ModelScope-compatible call signature).

    Args:
        task: must be ``'video-object-segmentation'``.
        model: checkpoint path, ModelScope directory or id, URL, registry name, a loaded :class:`RDEVOS`, or
            ``None`` for the embedded default model.
        top_k, mem_every: memory entries read per query pixel, memory update period (default: the preset's, else
            the model's own, else ModelScope's 20 and 4).
        resolution: short side to resize to (``None`` = native size; default: as ``top_k``).
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
        precision: ``fp32`` (reference numerics), ``bf16`` or ``fp16``.
        preset: ``modelscope``, ``davis2017``, ``davis2016`` or ``youtubevos``: replaces the model's own settings
            as a whole (default ``None``: the model's own settings; the embedded model: short side 540, top-k 20,
            memory every 10th frame; a checkpoint without them: ModelScope's). Explicit ``top_k``, ``mem_every`` and
            ``resolution`` override both (:meth:`InferenceConfig.for_model`, the one rule).
    """
    if task != TASK:
        raise InputError(f"unsupported task {task!r}; rdevos provides {TASK!r}")
    dev = resolve_device(device)
    if not isinstance(model, RDEVOS):
        from rdevos.hub import load_model

        model = load_model(model, device=dev)
    changes: dict[str, Any] = {"precision": Precision(precision)}
    if top_k is not None:
        changes["top_k"] = top_k
    if mem_every is not None:
        changes["mem_every"] = mem_every
    if resolution != "default":
        changes["resolution"] = None if resolution in (None, "native") else int(resolution)  # type: ignore[arg-type]
    config = InferenceConfig.for_model(model.inference_defaults, preset, **changes)
    return VideoObjectSegmentationPipeline(model, config, device=dev, modelscope_labels=modelscope_labels,
                                           progress=progress)


def masks_visualization(masks: np.ndarray, palette: Sequence[int] | None) -> list[Any]:
    """Palette images of label maps, as ModelScope's ``masks_visualization``.

    Args:
        masks: uint8 [T, H, W] label maps.
        palette: flat RGB palette (e.g. ``mask.getpalette()``); ``None`` uses the DAVIS palette.
    Returns:
        list of T PIL images in mode 'P'.
    """
    from PIL import Image

    if palette is None:
        from rdevos.io.masks import DAVIS_PALETTE

        palette = DAVIS_PALETTE
    out = []
    for m in np.asarray(masks, dtype=np.uint8):
        im = Image.fromarray(m)
        im.putpalette(list(palette))
        out.append(im)
    return out
