"""rdevos: RDE-VOS (CVPR 2022) video object segmentation.

Public API: :func:`load_model`, :class:`InferenceEngine`, :func:`pipeline`, :func:`masks_visualization`,
configuration dataclasses, and the error types.
"""

from __future__ import annotations

from rdevos.config import InferenceConfig, MemoryMode, MemorySchedule, ModelConfig, Precision
from rdevos.errors import CheckpointError, InputError, ModelNotFoundError, RDEVOSError
from rdevos.hub import load_model, save_checkpoint, save_modelscope_dir
from rdevos.inference.engine import InferenceEngine
from rdevos.inference.pipeline import masks_visualization, pipeline
from rdevos.model.network import RDEVOS, build_network

__version__ = "0.1.0"

__all__ = [
    "__version__", "load_model", "save_checkpoint", "save_modelscope_dir", "InferenceEngine", "pipeline",
    "masks_visualization", "RDEVOS", "build_network", "ModelConfig", "InferenceConfig", "MemoryMode",
    "MemorySchedule", "Precision", "RDEVOSError", "InputError", "CheckpointError", "ModelNotFoundError",
]
