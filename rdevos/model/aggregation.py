"""The Spatio-temporal Aggregation Module (SAM) and the memory compressor that builds the RDE.

RDE_t = squeeze(ASPP3D(non_local([RDE_{t-1}, new memory frame]))) for keys and (per object) values.
Module names match the official checkpoint: ``mem_compress.{key_encoder,value_encoder}`` are the SAMs,
a SAM's ASPP is called ``conv1``, and the squeeze convs are ``compress_key`` / ``compress_value``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NonLocalBlock3D", "ASPP3D", "SpatioTemporalAggregation", "MemoryCompressor"]


class NonLocalBlock3D(nn.Module):
    """Dot-product non-local block over (T, H, W) with 2x2 spatial max-pooling of phi and g; no norm.

    The affinity is divided by the number of pooled positions (no softmax), as in the reference.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = max(channels // 2, 1)
        self.inter_channels = inter
        self.theta = nn.Conv3d(channels, inter, 1)
        self.phi = nn.Sequential(nn.Conv3d(channels, inter, 1), nn.MaxPool3d((1, 2, 2)))
        self.g = nn.Sequential(nn.Conv3d(channels, inter, 1), nn.MaxPool3d((1, 2, 2)))
        self.W = nn.Conv3d(inter, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (N, C, T, H, W). Returns: (N, C, T, H, W)."""
        n = x.shape[0]
        theta = self.theta(x).reshape(n, self.inter_channels, -1).transpose(1, 2)  # N, THW, C'
        phi = self.phi(x).reshape(n, self.inter_channels, -1)  # N, C', P
        g = self.g(x).reshape(n, self.inter_channels, -1).transpose(1, 2)  # N, P, C'
        f = torch.matmul(theta, phi) / phi.shape[-1]
        y = torch.matmul(f, g).transpose(1, 2).reshape(n, self.inter_channels, *x.shape[2:])
        return self.W(y) + x


class _ASPPBranch(nn.Module):
    def __init__(self, inplanes: int, planes: int, dilation: int) -> None:
        super().__init__()
        if dilation == 1:
            self.atrous_conv = nn.Conv3d(inplanes, planes, 1, bias=False)
        else:
            self.atrous_conv = nn.Conv3d(inplanes, planes, (1, 3, 3), padding=(0, dilation, dilation),
                                         dilation=(1, dilation, dilation), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.atrous_conv(x))


class ASPP3D(nn.Module):
    """Atrous spatial pyramid (dilations 1, 2, 4, 6; width C/4 each), merged by a (1,3,3) conv; ReLU, no bias."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = channels // reduction
        self.aspp1 = _ASPPBranch(channels, mid, 1)
        self.aspp2 = _ASPPBranch(channels, mid, 2)
        self.aspp3 = _ASPPBranch(channels, mid, 4)
        self.aspp4 = _ASPPBranch(channels, mid, 6)
        self.conv1 = nn.Conv3d(4 * mid, channels, (1, 3, 3), padding=(0, 1, 1), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)], dim=1)
        return F.relu(self.conv1(y))


class SpatioTemporalAggregation(nn.Module):
    """SAM: non-local extraction, then residual ASPP enhancement (the squeeze lives in the compressor)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.non_local = NonLocalBlock3D(channels)
        self.conv1 = ASPP3D(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.non_local(x)
        return self.conv1(x) + x


def match_norm(new: torch.Tensor, pair: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rescale ``new`` (..., C, 1, h, w) so each C-vector has the mean L2 norm of the two in ``pair`` (..., C, 2, h, w)."""
    target = pair.float().norm(dim=-4, keepdim=True).mean(dim=-3, keepdim=True)
    current = new.float().norm(dim=-4, keepdim=True).clamp_min(eps)
    return new * (target / current).to(new.dtype)


class MemoryCompressor(nn.Module):
    """Folds a (previous RDE, new memory frame) pair into a new RDE, for keys and per-object values.

    Args:
        norm_match: rescale the outputs with :func:`match_norm` (``ModelConfig.rde_norm``; parameter-free).
    """

    def __init__(self, key_dim: int = 64, value_dim: int = 512, *, norm_match: bool = False) -> None:
        super().__init__()
        self.norm_match = norm_match
        self.key_encoder = SpatioTemporalAggregation(key_dim)
        self.value_encoder = SpatioTemporalAggregation(value_dim)
        self.compress_key = nn.Conv3d(key_dim, key_dim, (2, 3, 3), padding=(0, 1, 1))
        self.compress_value = nn.Conv3d(value_dim, value_dim, (2, 3, 3), padding=(0, 1, 1))

    def forward(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compress a two-frame stack.

        Args:
            key: (B, Ck, 2, h, w); time index 0 = previous RDE (or first-frame memory), 1 = new frame.
            value: (B, K, Cv, 2, h, w), one value per object; each object is compressed independently.
        Returns:
            key (B, Ck, 1, h, w) and value (B, K, Cv, 1, h, w).
        """
        if key.shape[2] != 2 or value.shape[3] != 2:
            raise ValueError(f"the memory compressor needs exactly 2 frames, got key {tuple(key.shape)}, "
                             f"value {tuple(value.shape)}")
        b, k = value.shape[:2]
        new_key = self.compress_key(self.key_encoder(key))
        new_value = self.compress_value(self.value_encoder(value.flatten(0, 1))).reshape(b, k, -1, 1,
                                                                                          *value.shape[-2:])
        if self.norm_match:
            new_key, new_value = match_norm(new_key, key), match_norm(new_value, value)
        return new_key, new_value
