"""Typed configuration: the architecture (:class:`ModelConfig`) and inference settings (:class:`InferenceConfig`)."""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ModelConfig", "InferenceConfig", "MemoryMode", "MemorySchedule", "Precision", "PRESETS"]


class MemoryMode(str, enum.Enum):
    """Which frames the memory holds (the reference's ``mode`` strings). All are constant in size.

    ``TWO_FRAMES_COMPRESS`` is the one RDE-VOS uses everywhere: [gt, gt] before the first memory update,
    then [RDE, last memory frame, gt, gt]. ``gt`` is duplicated on purpose, as in the reference: it changes
    which entries survive top-k.
    """

    TWO_FRAMES_COMPRESS = "two-frames-compress"
    GT_COMPRESS = "gt-compress"
    LAST_COMPRESS = "last-compress"
    COMPRESS = "compress"
    TWO_FRAMES = "two-frames"
    GT = "gt"
    LAST = "last"

    @property
    def compresses(self) -> bool:
        return self in (MemoryMode.TWO_FRAMES_COMPRESS, MemoryMode.GT_COMPRESS, MemoryMode.LAST_COMPRESS,
                        MemoryMode.COMPRESS)


class MemorySchedule(str, enum.Enum):
    """When a frame becomes a memory frame.

    ``ABSOLUTE``: frame index ``t % mem_every == 0`` (official DAVIS and ModelScope code).
    ``RELATIVE``: ``t - last_memory_frame >= mem_every``, where an annotated frame also counts as a memory frame
    (official YouTube-VOS code).
    """

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class Precision(str, enum.Enum):
    """Compute precision of the network (the memory read is always fp32)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def _to_tuple(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an RDE-VOS network. The defaults are the official architecture (64.0 M parameters).

    Attributes:
        key_block: residual block of the key encoder, ``"bottleneck"`` (ResNet-50) or ``"basic"`` (ResNet-18/34).
        key_layers: blocks in the three kept stages (the official ResNet-50 stops after layer3).
        key_width: base width of the key encoder (64 for torchvision ResNets).
        value_layers: blocks in the three kept stages of the (basic-block) value encoder.
        value_width: base width of the value encoder.
        key_dim: channels of keys (the affinity is scaled by ``1/sqrt(key_dim)``).
        value_dim: channels of values, of the thin query feature and of the readout.
        decoder_dims: output channels of the 1/16->1/8 and 1/8->1/4 upsampling blocks.
        cbam_reduction: channel reduction of the CBAM gate in the value fuser.
        single_object: stage-0 value encoder (RGB + mask, no "others" channel, no memory compressor).
        key_backbone: ``"resnet"`` (the official layout, set by ``key_block``/``key_layers``/``key_width``) or an
            ImageNet backbone cut at stride 16: ``"efficientnet-lite0"``, ``"-lite1"``, ``"-lite2"``.
        value_backbone: ``"resnet"`` (``value_layers``/``value_width``) or an EfficientNet-Lite name; the mask
            channels enter its stem as extra input channels with zero-initialised weights.
        rde_norm: rescale every new RDE key and value vector to the mean L2 norm of its two inputs at that position
            (parameter-free). Keeps the recursive fold bounded for models trained from scratch, whose SAM otherwise
            grows the key norm ~1000x per fold; off in the official architecture (no effect on its weights or keys).
    """

    key_block: str = "bottleneck"
    key_layers: tuple[int, int, int] = (3, 4, 6)
    key_width: int = 64
    value_layers: tuple[int, int, int] = (2, 2, 2)
    value_width: int = 64
    key_dim: int = 64
    value_dim: int = 512
    decoder_dims: tuple[int, int] = (256, 256)
    cbam_reduction: int = 16
    single_object: bool = False
    rde_norm: bool = False
    key_backbone: str = "resnet"
    value_backbone: str = "resnet"

    def __post_init__(self) -> None:
        from rdevos.model.backbones import backbone_names

        for name in ("key_layers", "value_layers", "decoder_dims"):
            object.__setattr__(self, name, _to_tuple(getattr(self, name)))
        for name in ("key_backbone", "value_backbone"):
            if getattr(self, name) not in ("resnet", *backbone_names()):
                raise ValueError(f"{name} must be 'resnet' or one of {list(backbone_names())}, "
                                 f"got {getattr(self, name)!r}")
        if self.key_block not in ("bottleneck", "basic"):
            raise ValueError(f"key_block must be 'bottleneck' or 'basic', got {self.key_block!r}")
        if len(self.key_layers) != 3 or len(self.value_layers) != 3 or len(self.decoder_dims) != 2:
            raise ValueError("key_layers and value_layers need 3 entries, decoder_dims 2")

    @property
    def key_channels(self) -> tuple[int, int, int]:
        """Channels of the key encoder's (f4, f8, f16) features."""
        if self.key_backbone != "resnet":
            from rdevos.model.backbones import lite_channels

            return lite_channels(self.key_backbone)
        expansion = 4 if self.key_block == "bottleneck" else 1
        w = self.key_width * expansion
        return (w, 2 * w, 4 * w)

    @property
    def value_channels(self) -> int:
        """Channels of the value encoder's stride-16 feature (before the fuser)."""
        if self.value_backbone != "resnet":
            from rdevos.model.backbones import lite_channels

            return lite_channels(self.value_backbone)[2]
        return 4 * self.value_width

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def official(cls) -> ModelConfig:
        """The official RDE-VOS architecture (ResNet-50 keys, ResNet-18 values, 64/512 channels)."""
        return cls()


#: Output strides ``InferenceConfig.fp32_stride`` accepts (0 = no fp32 stage, 16 = the whole key encoder).
FP32_STRIDES = (0, 2, 4, 8, 16)


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of the streaming engine. Defaults equal the ModelScope pipeline of the model card.

    Attributes:
        top_k: memory entries kept per query pixel in the top-k softmax.
        mem_every: a memory update every this many frames (see ``schedule``).
        memory_mode: which frames the memory holds.
        schedule: absolute (DAVIS, ModelScope) or relative (YouTube-VOS) memory-update rule.
        resolution: short side the frames are resized to (bicubic, on the normalised frame); ``None`` keeps the
            native size. Outputs are always at the input size.
        precision: network compute precision; the affinity and top-k softmax always run in fp32.
        fp32_stride: with bf16 on CPU, the key encoder's stages up to this output stride (0 = none, 2, 4, 8, 16 = all)
            still compute in fp32. The default 8 keeps bf16 masks close to fp32 (the skip features and keys come
            from these stages); 0 is the fastest bf16 (about 10-35 % faster, labels ~99.5 % equal to fp32).
        flip: horizontal-flip test-time averaging: a second engine segments the mirrored video (with its own
            memory) and the probabilities of both are averaged; about 1.9x the compute per frame (embedded model on
            8 held-out sequences: +1.0 J&F, docs/MODEL_CARD.md).
    """

    top_k: int = 20
    mem_every: int = 4
    memory_mode: MemoryMode = MemoryMode.TWO_FRAMES_COMPRESS
    schedule: MemorySchedule = MemorySchedule.ABSOLUTE
    resolution: int | None = 480
    precision: Precision = Precision.FP32
    fp32_stride: int = 8
    flip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_mode", MemoryMode(self.memory_mode))
        object.__setattr__(self, "schedule", MemorySchedule(self.schedule))
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {self.mem_every}")
        if self.resolution is not None and self.resolution < 16:
            raise ValueError(f"resolution must be None or >= 16, got {self.resolution}")
        if self.fp32_stride not in FP32_STRIDES:
            raise ValueError(f"fp32_stride must be one of {FP32_STRIDES}, got {self.fp32_stride!r}")

    def replace(self, **changes: Any) -> InferenceConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, enum.Enum):
                d[k] = v.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceConfig:
        return cls(**d)

    @classmethod
    def for_model(cls, model_defaults: Mapping[str, Any] | None = None, preset: str | None = None,
                  **overrides: Any) -> InferenceConfig:
        """The inference settings in effect: the one precedence rule of rdevos (CLI, ``pipeline()``,
        ``run-dataset``, export), from the strongest:

        1. ``overrides``: what the caller sets explicitly (``--top-k``, ``pipeline(top_k=...)``, ...);
        2. ``preset``: a preset the user names (:data:`PRESETS`); it replaces the model's defaults as a whole;
        3. ``model_defaults``: the model's own settings (``RDEVOS.inference_defaults``, e.g. the resolution it was
           trained at; the embedded model: short side 540, top-k 20, memory every 10th frame);
        4. the library defaults, :class:`InferenceConfig` ``()``: ModelScope's (short side 480, top-k 20, memory
           every 4th frame).

        The result is logged (INFO) with where each setting came from.
        """
        if preset is not None:
            config, source = cls.preset(preset), f"preset {preset}"
        elif model_defaults:
            config, source = cls().replace(**model_defaults), "the model's defaults"
        else:
            config, source = cls(), "the library defaults (ModelScope's)"
        if overrides:
            config = config.replace(**overrides)
        shown = {"resolution": "native" if config.resolution is None else config.resolution, "top_k": config.top_k,
                 "mem_every": config.mem_every, "schedule": config.schedule.value}
        explicit = sorted(k for k in overrides if k in shown)
        replaced = {k: v for k, v in (model_defaults or {}).items()
                    if preset is not None and k not in overrides and getattr(config, k) != v}
        logger.info("inference settings: %s (from %s%s)%s", ", ".join(f"{k} {v}" for k, v in shown.items()), source,
                    f"; set explicitly: {', '.join(explicit)}" if explicit else "",
                    f"; instead of the model's own {', '.join(f'{k} {v}' for k, v in replaced.items())}"
                    if replaced else "")
        return config

    @classmethod
    def preset(cls, name: str) -> InferenceConfig:
        """Named settings of the official evaluations; see :data:`PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


#: Official evaluation settings (rdevos-spec sections 2.5, 4.1, 4.7 and 5).
PRESETS: dict[str, InferenceConfig] = {
    # ModelScope pipeline: short side 480, top-k 20, memory every 4th frame (absolute index), fp32.
    "modelscope": InferenceConfig(),
    # eval_davis.py as in the README: native 480p frames, top-k 40, mem_every 3.
    "davis2017": InferenceConfig(top_k=40, mem_every=3, resolution=None),
    # eval_davis_2016.py with the README's --top 40.
    "davis2016": InferenceConfig(top_k=40, mem_every=3, resolution=None),
    # eval_youtube.py with the README's --mem_every 4 --top 20: relative schedule, short side 480.
    "youtubevos": InferenceConfig(top_k=20, mem_every=4, schedule=MemorySchedule.RELATIVE, resolution=480),
}
