"""Image encoders: the key encoder (ResNet trunk to stride 16) and the value ("mask") encoder with its fuser.

Attribute names follow the official checkpoint (``res2`` for torchvision's ``layer1`` in the key encoder,
``fuser.attention.ChannelGate.mlp`` ...), so official weights load with an identity key mapping.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.model.backbones import EfficientNetLite

__all__ = ["BasicBlock", "Bottleneck", "KeyEncoder", "ValueEncoder", "LiteKeyEncoder", "LiteValueEncoder", "ResBlock", "CBAM", "FeatureFusionBlock"]


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), stride on the first conv."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=bias),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


class Bottleneck(nn.Module):
    """torchvision ResNet-v1.5 bottleneck (1x1, 3x3 with the stride, 1x1 x4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=bias),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut, inplace=True)


def _make_stage(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int,
                stride: int, bias: bool) -> tuple[nn.Sequential, int]:
    layers = [block(inplanes, planes, stride, bias=bias)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes, 1, bias=bias) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


class KeyEncoder(nn.Module):
    """ResNet trunk (conv1 .. layer3) of the query/key frame; no conv biases (torchvision layout).

    Official: ResNet-50, outputs f4 (256 ch), f8 (512), f16 (1024).
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, int, int] = (3, 4, 6), width: int = 64) -> None:
        super().__init__()
        blk = Bottleneck if block == "bottleneck" else BasicBlock
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res2, c = _make_stage(blk, width, width, layers[0], 1, False)
        self.layer2, c = _make_stage(blk, c, 2 * width, layers[1], 2, False)
        self.layer3, c = _make_stage(blk, c, 4 * width, layers[2], 2, False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: image (B, 3, H, W) normalised. Returns: f16, f8, f4 features at strides 16, 8, 4."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(image)), inplace=True))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class ResBlock(nn.Module):
    """Pre-activation residual block without normalisation; 3x3 ``downsample`` shortcut when channels change."""

    def __init__(self, indim: int, outdim: int | None = None) -> None:
        super().__init__()
        outdim = indim if outdim is None else outdim
        self.downsample = None if indim == outdim else nn.Conv2d(indim, outdim, 3, padding=1)
        self.conv1 = nn.Conv2d(indim, outdim, 3, padding=1)
        self.conv2 = nn.Conv2d(outdim, outdim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return shortcut + r


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        # Index 0 is a (parameter-free) flatten so that the Linear layers sit at mlp.1 / mlp.3 as in the checkpoint.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional block attention: channel gate (avg+max pooled MLP) then spatial gate (7x7 conv)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = _ChannelGate(channels, reduction)
        self.SpatialGate = _SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuse the value encoder's f16 with the key encoder's f16: ResBlock, CBAM residual, ResBlock."""

    def __init__(self, indim: int, outdim: int, reduction: int = 16) -> None:
        super().__init__()
        self.block1 = ResBlock(indim, outdim)
        self.attention = CBAM(outdim, reduction)
        self.block2 = ResBlock(outdim, outdim)

    def forward(self, x: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        x = self.block1(torch.cat([x, key_f16], dim=1))
        return self.block2(x + self.attention(x))


class ValueEncoder(nn.Module):
    """ResNet-18-style trunk on [RGB, mask, others] (all convs with bias), fused with the key encoder's f16.

    The stage-0 single-object variant (``extra_channels=1``) takes [RGB, mask] only.
    """

    def __init__(self, key_f16_channels: int = 1024, value_dim: int = 512, layers: tuple[int, int, int] = (2, 2, 2),
                 width: int = 64, extra_channels: int = 2, cbam_reduction: int = 16) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.conv1 = nn.Conv2d(3 + extra_channels, width, 7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1, c = _make_stage(BasicBlock, width, width, layers[0], 1, True)
        self.layer2, c = _make_stage(BasicBlock, c, 2 * width, layers[1], 2, True)
        self.layer3, c = _make_stage(BasicBlock, c, 4 * width, layers[2], 2, True)
        self.fuser = FeatureFusionBlock(c + key_f16_channels, value_dim, cbam_reduction)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Encode one value per (frame, object).

        Args:
            image: (N, 3, H, W) normalised frames, one row per object (or broadcastable).
            key_f16: (N, C16, H/16, W/16) key-encoder features of the same frames.
            masks: (N, E, H, W) mask channels: [mask, others] (E=2) or [mask] (E=1).
        Returns:
            (N, value_dim, H/16, W/16)
        """
        x = torch.cat([image, masks], dim=1)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fuser(x, key_f16)


class LiteKeyEncoder(EfficientNetLite):
    """EfficientNet-Lite trunk as the key encoder (ImageNet-normalised input, outputs f16, f8, f4)."""

    def __init__(self, name: str = "efficientnet-lite2") -> None:
        super().__init__(name, imagenet_input=True)


class LiteValueEncoder(nn.Module):
    """EfficientNet-Lite trunk on [RGB, mask channels] (mask weights zero-initialised), fused with the key f16."""

    def __init__(self, name: str, key_f16_channels: int, value_dim: int, extra_channels: int = 2,
                 cbam_reduction: int = 16) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.trunk = EfficientNetLite(name, extra_channels=extra_channels, imagenet_input=True)
        self.fuser = FeatureFusionBlock(self.trunk.channels[2] + key_f16_channels, value_dim, cbam_reduction)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Same contract as :meth:`ValueEncoder.forward`."""
        f16 = self.trunk(torch.cat([image, masks], dim=1))[0]
        return self.fuser(f16, key_f16)
