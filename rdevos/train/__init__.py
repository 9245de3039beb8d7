"""Training: the RDE-VOS recipe (stages, data, losses, one Trainer loop, torchrun support).

Entry point: :func:`run_training` (``python -m rdevos.train --config X.yaml [key=value ...]`` or
``torchrun --nproc_per_node N -m rdevos.train --config X.yaml``). Presets live in ``configs/``.
"""

from __future__ import annotations

from rdevos.train.config import DataSource, SourceKind, StageConfig, TrainConfig, TrainPrecision
from rdevos.train.trainer import LoadReport, Trainer, load_backbone, load_weights, run_training, validate

__all__ = ["run_training", "Trainer", "TrainConfig", "StageConfig", "DataSource", "SourceKind", "TrainPrecision",
           "load_weights", "load_backbone", "validate", "LoadReport"]
