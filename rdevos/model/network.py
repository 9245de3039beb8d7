"""The RDE-VOS network: encoders, key projection, memory compressor and decoder (nn.Module only)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.config import ModelConfig
from rdevos.model.aggregation import MemoryCompressor
from rdevos.model.decoder import Decoder
from rdevos.model.encoders import KeyEncoder, LiteKeyEncoder, LiteValueEncoder, ValueEncoder
from rdevos.model.memory_read import read_memory

__all__ = ["RDEVOS", "KeyFeatures", "KeyProjection", "build_network", "aggregate_probs", "soft_aggregate_logits"]


class KeyFeatures(NamedTuple):
    """Output of :meth:`RDEVOS.encode_key` for B frames (stride-16 size h, w)."""

    key: torch.Tensor  #: (B, key_dim, h, w)
    f16_thin: torch.Tensor  #: (B, value_dim, h, w) query feature concatenated to the readout
    f16: torch.Tensor  #: (B, C16, h, w) key-encoder feature, also used by the value encoder
    f8: torch.Tensor  #: (B, C8, 2h, 2w)
    f4: torch.Tensor  #: (B, C4, 4h, 4w)


class KeyProjection(nn.Module):
    """3x3 conv from the key encoder's f16 to the key space (orthogonal init, zero bias)."""

    def __init__(self, indim: int, keydim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(indim, keydim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_proj(x)


def soft_aggregate_logits(prob: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Soft aggregation of per-object probabilities into logits over [background, objects].

    Args:
        prob: per-object probabilities with the object axis at ``dim`` (K entries).
    Returns:
        logits with K+1 entries on ``dim``: ``log(p/(1-p))`` of [prod(1-p), p_1..p_K] clamped to [1e-7, 1-1e-7].
    """
    bg = torch.prod(1 - prob, dim=dim, keepdim=True)
    p = torch.cat([bg, prob], dim=dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p))


def aggregate_probs(prob: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Softmax of :func:`soft_aggregate_logits`: (K, ...) object probabilities -> (K+1, ...), channel 0 = bg."""
    return F.softmax(soft_aggregate_logits(prob, dim), dim=dim)


def mask_channels(masks: torch.Tensor, single_object: bool) -> torch.Tensor:
    """(B, K, H, W) object masks -> (B*K, 1 or 2, H, W) value-encoder inputs: the mask, and unless
    ``single_object`` the sum of the other objects' masks (zeros when K == 1)."""
    b, k, h, w = masks.shape
    if single_object:
        return masks.reshape(b * k, 1, h, w)
    others = masks.sum(dim=1, keepdim=True) - masks if k > 1 else torch.zeros_like(masks)
    return torch.stack([masks, others], dim=2).reshape(b * k, 2, h, w)


class RDEVOS(nn.Module):
    """RDE-VOS network. Attribute names equal the official checkpoint's top-level prefixes."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        #: Inference settings the weights were made for (e.g. ``{"resolution": 288}`` for a model trained at that
        #: scale), read from rdevos checkpoints; the CLI and ``pipeline`` apply them over the preset unless the
        #: caller sets them explicitly. Not part of the state dict.
        self.inference_defaults: dict[str, Any] = {}
        c4, c8, c16 = config.key_channels
        extra = 1 if config.single_object else 2
        self.key_encoder: nn.Module
        self.value_encoder: nn.Module
        if config.key_backbone == "resnet":
            self.key_encoder = KeyEncoder(config.key_block, config.key_layers, config.key_width)
        else:
            self.key_encoder = LiteKeyEncoder(config.key_backbone)
        if config.value_backbone == "resnet":
            self.value_encoder = ValueEncoder(c16, config.value_dim, config.value_layers, config.value_width,
                                              extra_channels=extra, cbam_reduction=config.cbam_reduction)
        else:
            self.value_encoder = LiteValueEncoder(config.value_backbone, c16, config.value_dim, extra,
                                                  config.cbam_reduction)
        self.key_proj = KeyProjection(c16, config.key_dim)
        self.key_comp = nn.Conv2d(c16, config.value_dim, 3, padding=1)
        self.decoder = Decoder(config.value_dim, c8, c4, config.decoder_dims)
        if not config.single_object:
            self.mem_compress = MemoryCompressor(config.key_dim, config.value_dim, norm_match=config.rde_norm)

    def encode_key(self, image: torch.Tensor) -> KeyFeatures:
        """Args: image (B, 3, H, W) normalised, H and W multiples of 16. Returns: :class:`KeyFeatures`."""
        f16, f8, f4 = self.key_encoder(image)
        return KeyFeatures(self.key_proj(f16), self.key_comp(f16), f16, f8, f4)

    def encode_value(self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Encode the memory value of every object of B frames.

        Args:
            image: (B, 3, H, W) normalised frames.
            f16: (B, C16, H/16, W/16) from :meth:`encode_key` of the same frames.
            masks: (B, K, H, W) soft object masks in [0, 1]. The "others" channel of object i is the sum of the
                other objects' masks (zeros when K == 1).
        Returns:
            (B, K, value_dim, H/16, W/16)
        """
        b, k = masks.shape[:2]
        extra = mask_channels(masks, self.config.single_object)
        image = image.unsqueeze(1).expand(b, k, *image.shape[1:]).reshape(b * k, *image.shape[1:])
        f16 = f16.unsqueeze(1).expand(b, k, *f16.shape[1:]).reshape(b * k, *f16.shape[1:])
        value = self.value_encoder(image, f16, extra)
        return value.reshape(b, k, *value.shape[1:])

    def read_memory(self, mem_key: torch.Tensor, mem_value: torch.Tensor, query_key: torch.Tensor,
                    top_k: int) -> torch.Tensor:
        """Top-k memory read. mem_key (B, Ck, N), mem_value (B, K, Cv, N), query_key (B, Ck, h, w) -> (B, K, Cv, h, w)."""
        return read_memory(mem_key, mem_value, query_key, top_k)

    def segment(self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor,
                f4: torch.Tensor) -> torch.Tensor:
        """Decode object logits from the memory readout of one frame.

        Args:
            readout: (K, value_dim, h, w) for the K objects of one frame.
            f16_thin, f8, f4: query features of that frame with batch 1.
        Returns:
            (K, 1, 16h, 16w) logits.
        """
        k = readout.shape[0]
        x = torch.cat([readout, f16_thin.expand(k, -1, -1, -1).to(readout.dtype)], dim=1)
        return self.decoder(x, f8, f4)

    def compress_memory(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold [previous RDE, new frame] into the new RDE; see :class:`MemoryCompressor`."""
        if self.config.single_object:
            raise RuntimeError("a single-object (stage-0) network has no memory compressor")
        return self.mem_compress(key, value)


def build_network(config: ModelConfig | None = None) -> RDEVOS:
    """Build an RDE-VOS network (random weights) in eval mode."""
    return RDEVOS(config).eval()
