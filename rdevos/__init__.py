"""rdevos: RDE-VOS (CVPR 2022) video object segmentation.

Public API, everything a client (the CLI, the web app, scripts) needs:

* models: :func:`load_model`, :func:`save_checkpoint`, :func:`resolve_weights`, :class:`RDEVOS`;
* inference: :class:`InferenceEngine` (one frame per step), :class:`VideoSession` (masks on any frame,
  forward/backward/both), :func:`plan_propagation`, :func:`pipeline`;
* resumable runs: :func:`segment_to_folder`, :class:`RunFolder`, :class:`RunState`, :func:`run_signature`;
* frames and masks: :func:`open_frames`, :class:`FolderSource`, :class:`VideoSource`, :func:`read_mask`,
  :func:`write_mask`, :func:`atomic_write`; overlays (:class:`OverlayWriter`) and the bundled sample clip load
  on first use;
* devices, configuration dataclasses and the error types.
"""

from __future__ import annotations

from typing import Any

from rdevos.config import InferenceConfig, MemoryMode, MemorySchedule, ModelConfig, Precision
from rdevos.device import default_precision, resolve_device
from rdevos.errors import CheckpointError, InputError, ModelNotFoundError, RDEVOSError
from rdevos.hub import DEFAULT_MODEL, load_model, resolve_weights, save_checkpoint, save_modelscope_dir
from rdevos.inference.engine import InferenceEngine
from rdevos.inference.pipeline import masks_visualization, pipeline
from rdevos.inference.plan import Direction, PropagationPlan, plan_propagation
from rdevos.inference.runs import (RunFolder, RunFolderBusy, RunFolderError, RunProgress, RunResult, RunState,
                                   run_signature, segment_to_folder)
from rdevos.inference.session import SegmentedFrame, VideoSession
from rdevos.io.atomic import atomic_path, atomic_write
from rdevos.io.frames import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FolderSource, FrameSource, VideoSource,
                              natural_sort_key, open_frames)
from rdevos.io.masks import (DAVIS_PALETTE, LabelMask, as_label_mask, read_mask, write_mask, write_object_masks,
                             write_probabilities)
from rdevos.model.network import RDEVOS, build_network

__version__ = "0.1.0"

# Loaded on first use: OpenCV/PyAV (overlays) and the sample clip's files are not needed to segment.
_LAZY = {"OverlayWriter": "rdevos.io.overlay", "GifWriter": "rdevos.io.overlay", "overlay_image": "rdevos.io.overlay",
         "sample_clip_dir": "rdevos.io.sample", "sample_mask_path": "rdevos.io.sample",
         "load_prompt_predictor": "rdevos.prompt", "PromptPredictor": "rdevos.prompt"}

__all__ = [
    "__version__", "load_model", "save_checkpoint", "save_modelscope_dir", "resolve_weights", "DEFAULT_MODEL",
    "InferenceEngine", "pipeline", "masks_visualization", "RDEVOS", "build_network", "ModelConfig",
    "InferenceConfig", "MemoryMode", "MemorySchedule", "Precision", "RDEVOSError", "InputError", "CheckpointError",
    "ModelNotFoundError", "resolve_device", "default_precision", "VideoSession", "SegmentedFrame", "Direction",
    "PropagationPlan", "plan_propagation", "RunFolder", "RunFolderError", "RunProgress", "RunResult", "RunState",
    "run_signature", "segment_to_folder", "atomic_write", "atomic_path", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
    "FrameSource", "FolderSource", "VideoSource", "natural_sort_key", "open_frames", "DAVIS_PALETTE", "LabelMask",
    "as_label_mask", "read_mask", "write_mask", "write_object_masks", "write_probabilities", "RunFolderBusy",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rdevos' has no attribute {name!r}")
