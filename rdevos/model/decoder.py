"""Mask decoder: memory readout + thin query feature at 1/16, upsampled with skips from f8 and f4."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.model.encoders import ResBlock

__all__ = ["Decoder", "UpsampleBlock"]


class UpsampleBlock(nn.Module):
    """x2 bilinear upsampling of ``up`` plus a 3x3 conv of the skip feature, then a ResBlock."""

    def __init__(self, skip_c: int, up_c: int, out_c: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_c, up_c, 3, padding=1)
        self.out_conv = ResBlock(up_c, out_c)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        # skip may have batch 1 while up has one row per object: the skip conv runs once and broadcasts.
        x = self.skip_conv(skip) + F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(x)


class Decoder(nn.Module):
    """Official decoder: compress ResBlock(2*value_dim -> value_dim), 16->8, 8->4, 3x3 pred conv, x4 upsample."""

    def __init__(self, value_dim: int = 512, f8_channels: int = 512, f4_channels: int = 256,
                 dims: tuple[int, int] = (256, 256)) -> None:
        super().__init__()
        self.compress = ResBlock(2 * value_dim, value_dim)
        self.up_16_8 = UpsampleBlock(f8_channels, value_dim, dims[0])
        self.up_8_4 = UpsampleBlock(f4_channels, dims[0], dims[1])
        self.pred = nn.Conv2d(dims[1], 1, 3, padding=1)

    def forward(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """Args: f16 (N, 2*value_dim, h, w); f8, f4 (1 or N, C, 2h, 2w) / (.., 4h, 4w).

        Returns: (N, 1, 16h, 16w) logits.
        """
        x = self.compress(f16)
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
