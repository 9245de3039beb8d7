"""The prompt-to-mask network: an ImageNet EfficientNet-Lite trunk on the crop, a small prompt encoder, and a
U-Net-style decoder that fuses the prompt maps at strides 16, 8 and 4."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.model.backbones import EfficientNetLite

__all__ = ["PromptConfig", "PromptNet"]


@dataclass(frozen=True)
class PromptConfig:
    """Architecture of :class:`PromptNet` (stored in its checkpoints)."""

    backbone: str = "efficientnet-lite2"
    crop_size: int = 320
    context: float = 0.25
    prompt_channels: int = 4  # box, positive clicks, negative clicks, previous mask
    width: int = 96  # decoder channels at stride 16 (stride 8: 3/4, stride 4: 1/2)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Res(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, dilation=dilation),
                                  nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x), inplace=True)


class PromptNet(nn.Module):
    """Crop + prompt maps -> mask logits.

    ``forward(image, prompts)``: image (B, 3, S, S) normalised with the ImageNet mean/std, prompts (B, 4, S, S);
    returns logits (B, 1, S, S). :meth:`features` / :meth:`decode` split the two so that iterative click
    simulation reruns only the decoder.
    """

    def __init__(self, config: PromptConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PromptConfig()
        self.trunk = EfficientNetLite(config.backbone, imagenet_input=True)
        c4, c8, c16 = self.trunk.channels
        w16, w8, w4 = config.width, config.width * 3 // 4, config.width // 2
        pc = config.prompt_channels
        self.prompt4 = nn.Sequential(_conv(pc, 16, 2), _conv(16, 32, 2))
        self.prompt8 = _conv(32, 48, 2)
        self.prompt16 = _conv(48, 64, 2)
        self.fuse16 = nn.Sequential(_conv(c16 + 64, w16), _Res(w16, 2), _Res(w16, 4))
        self.global16 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w16, w16, 1), nn.ReLU(inplace=True))
        self.fuse8 = nn.Sequential(_conv(w16 + c8 + 48, w8), _Res(w8))
        self.fuse4 = nn.Sequential(_conv(w8 + c4 + 32, w4), _Res(w4))
        self.head = nn.Conv2d(w4, 1, 1)

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trunk features (f16, f8, f4) of the crop."""
        return self.trunk(image)

    def decode(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor], prompts: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, 1, S, S) from trunk features and prompt maps."""
        f16, f8, f4 = feats
        p4 = self.prompt4(prompts.to(f4.dtype))
        p8 = self.prompt8(p4)
        p16 = self.prompt16(p8)
        x = self.fuse16(torch.cat([f16, p16], 1))
        x = x + self.global16(x)
        x = F.interpolate(x, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse8(torch.cat([x, f8, p8], 1))
        x = F.interpolate(x, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse4(torch.cat([x, f4, p4], 1))
        return F.interpolate(self.head(x), size=prompts.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(image), prompts)
