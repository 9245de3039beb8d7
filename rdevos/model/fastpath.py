"""Inference copy of an RDE-VOS network, built for speed; the user's network is never modified.

:func:`inference_network` returns a new :class:`~rdevos.model.network.RDEVOS` with the same methods and numbers
(up to float rounding), where

* every BatchNorm is folded into the convolution before it (weights and bias computed once, at build time);
* weights are stored in the compute dtype (bf16 on the bf16 path: no per-call casts as under autocast) and 2-D
  convolution weights in ``channels_last``, the layout activations keep from the first convolution to the last;
* on CPU each convolution runs as one oneDNN primitive with its ReLU/ReLU6 and its residual add as post-ops
  (``torch.ops.mkldnn._convolution_pointwise``), so ``conv -> add -> relu`` is one pass over the activations;
* the two convolutions that read ``cat([per-object tensor, frame tensor])`` (the decoder's ``compress`` ResBlock
  and the value fuser's ``block1``) are split by input channels: the frame part is convolved once per frame
  instead of once per object (convolution is linear in its input channels, so the sum is the same).

The copy is for inference only (no BatchNorm statistics, no gradients); its ``state_dict`` is not a checkpoint. In
fp32 it shares the tensors it does not change with the user's network (:func:`share_layout_`: those are stored in
``channels_last`` in place, same values), so it costs only the folded and split weights.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.config import FP32_STRIDES
from rdevos.model.backbones import EfficientNetLite, MBConv, SameConv2d, same_padding
from rdevos.model.decoder import Decoder, UpsampleBlock
from rdevos.model.encoders import (BasicBlock, Bottleneck, FeatureFusionBlock, KeyEncoder, LiteValueEncoder,
                                   ResBlock, ValueEncoder)
from rdevos.model.network import RDEVOS, mask_channels

logger = logging.getLogger(__name__)

__all__ = ["FP32_STRIDES", "FusedConv2d", "FastRDEVOS", "inference_network", "cached_inference_network", "fold_batchnorm",
           "share_layout_", "mkldnn_fusion_available"]

#: Attribute of the user's network holding its last inference copy (a plain attribute: not in the state dict).
_CACHE_ATTR = "_rdevos_inference_copy"

_ACTS = (None, "relu", "relu6")


def mkldnn_fusion_available() -> bool:
    """Whether this torch build has oneDNN's fused convolution ops (``mkldnn::_convolution_pointwise``)."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and \
            hasattr(torch.ops.mkldnn, "_convolution_pointwise") and \
            hasattr(torch.ops.mkldnn._convolution_pointwise, "binary")
    except (AttributeError, RuntimeError):
        return False


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode BatchNorm), computed in float64.

    Without ``bn`` the conv's own tensors are returned (not copies), so a copy in the same dtype and layout shares them.
    """
    if bn is None:
        return conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    w = conv.weight.detach().double()
    b = None if conv.bias is None else conv.bias.detach().double()
    scale = bn.weight.detach().double() * torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
    if b is not None:
        shift = shift + b * scale
    return (w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), shift.to(conv.weight.dtype)


class FusedConv2d(nn.Module):
    """``act(conv(x) [+ residual])`` with folded BatchNorm, stored in the compute dtype and layout.

    Args:
        weight, bias: the (folded) parameters.
        stride, padding, dilation, groups: as ``nn.Conv2d`` (integers or pairs); ``same=True`` computes TF "SAME"
            padding per input size instead (:class:`~rdevos.model.backbones.SameConv2d`).
        act: ``None``, ``"relu"`` or ``"relu6"``, applied after the residual add.
        dtype: weight and activation dtype. channels_last: store the weight in ``channels_last``.
        fused: run through oneDNN's fused op (CPU only); otherwise ``F.conv2d`` and eager post-ops.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int, act: str | None = None,
                 same: bool = False, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 fused: bool = False) -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"unknown activation {act!r}")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.channels_last = channels_last
        self.register_buffer("weight", weight.detach().to(dtype).contiguous(memory_format=fmt))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).contiguous())
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups, self.act, self.same, self.fused = groups, act, same, fused
        self.kernel_size = tuple(weight.shape[-2:])

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, act: str | None = None,
                  **kw: object) -> FusedConv2d:
        """Build from an ``nn.Conv2d`` (or :class:`SameConv2d`) and the BatchNorm that follows it."""
        w, b = fold_batchnorm(conv, bn)
        if isinstance(conv.padding, str):
            raise ValueError(f"string padding {conv.padding!r} is not supported")
        return cls(w, b, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
                   groups=conv.groups, act=act, same=isinstance(conv, SameConv2d), **kw)  # type: ignore[arg-type]

    def split_input(self, channels: int) -> tuple[FusedConv2d, FusedConv2d]:
        """Two convolutions over input channels ``[:channels]`` and ``[channels:]`` whose outputs sum to this one's
        pre-activation output; the bias and activation stay with the first, the second has neither."""
        if self.groups != 1:
            raise ValueError("cannot split a grouped convolution")
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=1, same=self.same,
                  dtype=self.weight.dtype, channels_last=self.channels_last, fused=self.fused)
        a = FusedConv2d(self.weight[:, :channels], self.bias, act=self.act, **kw)  # type: ignore[arg-type]
        b = FusedConv2d(self.weight[:, channels:], None, act=None, **kw)  # type: ignore[arg-type]
        return a, b

    def _same_pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        pads = []
        for size, k, s, d in ((x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1]),
                              (x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])):
            pads += list(same_padding(int(size), k, s, d))
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return x, [pads[2], pads[0]]
        return F.pad(x, pads), [0, 0]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``act(conv(x) + residual)``; ``residual`` has the output's shape (or broadcasts to it)."""
        padding = self.padding
        if x.dtype != self.weight.dtype:  # at a precision boundary (fp32 high-resolution stages -> bf16)
            x = x.to(self.weight.dtype)
        if residual is not None and residual.dtype != self.weight.dtype:
            residual = residual.to(self.weight.dtype)
        if self.same:
            x, padding = self._same_pad(x)
        if self.fused and x.device.type == "cpu":
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            x = x.contiguous(memory_format=fmt)
            if self.act == "relu6":
                unary, scalars = "hardtanh", [0.0, 6.0]
            else:
                unary, scalars = (self.act or "none"), []
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, padding, self.stride,
                                                               self.dilation, self.groups, unary, scalars, "")
            residual = _per_row(residual, x.shape[0]).contiguous(memory_format=fmt)
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, self.weight, self.bias, padding, self.stride, self.dilation, self.groups, "add",
                None, unary if self.act else None, scalars, "")
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        if residual is not None:
            y = y + _per_row(residual, y.shape[0])
        if self.act == "relu":
            y = F.relu(y)
        elif self.act == "relu6":
            y = F.relu6(y)
        return y


def _per_row(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` with batch B repeated to ``n`` rows, each row ``n // B`` times in a row (one frame's objects)."""
    b = t.shape[0]
    if b == n:
        return t
    if b == 1:
        return t.expand(n, *t.shape[1:])
    return t.repeat_interleave(n // b, dim=0)


# --------------------------------------------------------------------------------------------- fast blocks
class _FastResNetBlock(nn.Module):
    """Bottleneck or BasicBlock with folded BN: the last conv carries the shortcut add and the ReLU."""

    def __init__(self, convs: list[FusedConv2d], downsample: FusedConv2d | None) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs[:-1]:
            out = conv(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.convs[-1](out, shortcut)


class _FastResBlock(nn.Module):
    """:class:`ResBlock`: ``shortcut + conv2(relu(conv1(relu(x))))`` with the inner ReLU and the add fused.

    With ``split`` channels the input is ``cat([x, shared])`` given as ``x`` (N rows) and ``shared`` (1 row, the
    same for every row of x): the shared part of conv1 and of the downsample runs once.
    """

    def __init__(self, block: ResBlock, kw: dict[str, object], *, split: int | None = None,
                 out_act: str | None = None) -> None:
        super().__init__()
        self.conv1 = FusedConv2d.from_conv(block.conv1, act="relu", **kw)
        self.conv2 = FusedConv2d.from_conv(block.conv2, act=out_act, **kw)
        self.downsample = None if block.downsample is None else FusedConv2d.from_conv(block.downsample, **kw)
        self.split = split
        if split is not None:
            if self.downsample is None:
                raise ValueError("a split ResBlock needs a downsample conv (its input and output widths differ)")
            self.conv1, self.conv1_shared = self.conv1.split_input(split)
            self.downsample, self.downsample_shared = self.downsample.split_input(split)

    def forward(self, x: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        if self.split is None:
            y = self.conv1(F.relu(x))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.conv2(y, shortcut)
        if shared is None:  # called with the concatenated input
            x, shared = x[:, :self.split], x[:, self.split:]
        # shared has one row per frame; FusedConv2d repeats it over that frame's rows of x
        y = self.conv1(F.relu(x), self.conv1_shared(F.relu(shared)))
        shortcut = self.downsample(x, self.downsample_shared(shared))
        return self.conv2(y, shortcut)


class _FastFuser(nn.Module):
    """:class:`FeatureFusionBlock` with block1 split: the key-encoder f16 part is convolved once per frame."""

    def __init__(self, fuser: FeatureFusionBlock, value_channels: int, kw: dict[str, object]) -> None:
        super().__init__()
        self.block1 = _FastResBlock(fuser.block1, kw, split=value_channels)
        self.attention = fuser.attention
        self.block2 = _FastResBlock(fuser.block2, kw)

    def forward(self, x: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        """x (N, C, h, w); key_f16 (B, C16, h, w) with N a multiple of B (the rows of one frame consecutive)."""
        y = self.block1(x, key_f16)
        return self.block2(y + self.attention(y))


class _FastResNetValueEncoder(nn.Module):
    def __init__(self, enc: ValueEncoder, kw: dict[str, object]) -> None:
        super().__init__()
        self.extra_channels = enc.extra_channels
        self.conv1 = FusedConv2d.from_conv(enc.conv1, enc.bn1, act="relu", **kw)
        self.maxpool = enc.maxpool
        self.layers = nn.Sequential(*[_fast_resnet_block(b, kw) for layer in (enc.layer1, enc.layer2, enc.layer3)
                                      for b in layer])
        self.fuser = _FastFuser(enc.fuser, enc.layer3[-1].conv2.out_channels, kw)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, masks.to(image.dtype)], dim=1)
        x = self.layers(self.maxpool(self.conv1(x)))
        return self.fuser(x, key_f16)


class _FastKeyEncoder(nn.Module):
    """ResNet key encoder; the stages up to output stride ``fp32_stride`` (conv1 = 2, res2 = 4, layer2 = 8) compute
    in fp32 and their f4/f8 outputs are cast to ``dtype`` once."""

    def __init__(self, enc: KeyEncoder, kw: dict[str, object], fp32_stride: int = 0) -> None:
        super().__init__()
        self.dtype = kw["dtype"]

        def kw_at(stride: int) -> dict[str, object]:
            return dict(kw, dtype=torch.float32) if stride <= fp32_stride else kw

        self.conv1 = FusedConv2d.from_conv(enc.conv1, enc.bn1, act="relu", **kw_at(2))
        self.maxpool = enc.maxpool
        self.res2 = nn.Sequential(*[_fast_resnet_block(b, kw_at(4)) for b in enc.res2])
        self.layer2 = nn.Sequential(*[_fast_resnet_block(b, kw_at(8)) for b in enc.layer2])
        self.layer3 = nn.Sequential(*[_fast_resnet_block(b, kw_at(16)) for b in enc.layer3])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.res2(self.maxpool(self.conv1(image)))
        f8 = self.layer2(f4)
        return self.layer3(f8), f8.to(self.dtype), f4.to(self.dtype)  # type: ignore[arg-type]


class _FastMBConv(nn.Module):
    def __init__(self, blk: MBConv, kw: dict[str, object]) -> None:
        super().__init__()
        self.expand = FusedConv2d.from_conv(blk._expand_conv, blk._bn0, act="relu6", **kw) \
            if blk.expand != 1 else None
        self.depthwise = FusedConv2d.from_conv(blk._depthwise_conv, blk._bn1, act="relu6", **kw)
        self.project = FusedConv2d.from_conv(blk._project_conv, blk._bn2, **kw)
        self.residual = blk.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        return self.project(self.depthwise(y), x if self.residual else None)


class _FastLiteTrunk(nn.Module):
    """EfficientNet-Lite trunk up to f16; the stem and the blocks up to output stride ``fp32_stride`` compute in fp32
    (their f4/f8 outputs are cast to ``dtype`` once)."""

    def __init__(self, trunk: EfficientNetLite, kw: dict[str, object], fp32_stride: int = 0) -> None:
        super().__init__()
        self.imagenet_input = trunk.imagenet_input
        self.dtype = dtype = kw["dtype"]
        last32 = {0: -2, 2: -1, 4: trunk.f4_index, 8: trunk.f8_index, 16: trunk.f16_index}[fp32_stride]
        in_dtype = torch.float32 if last32 >= -1 else dtype
        self.register_buffer("_in_scale", trunk._in_scale.to(in_dtype), persistent=False)
        self.register_buffer("_in_shift", trunk._in_shift.to(in_dtype), persistent=False)
        kw32 = dict(kw, dtype=torch.float32)
        self.stem = FusedConv2d.from_conv(trunk._conv_stem, trunk._bn0, act="relu6", **(kw32 if last32 >= -1 else kw))
        self.blocks = nn.ModuleList(_FastMBConv(b, kw32 if i <= last32 else kw)
                                    for i, b in enumerate(trunk._blocks[:trunk.f16_index + 1]))
        self.f4_index, self.f8_index = trunk.f4_index, trunk.f8_index
        self.channels = trunk.channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.to(self._in_scale.dtype)
        if self.imagenet_input:
            rgb = x[:, :3] * self._in_scale + self._in_shift
            x = rgb if x.shape[1] == 3 else torch.cat([rgb, x[:, 3:]], dim=1)
        x = self.stem(x)
        f4 = f8 = x
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.f4_index:
                f4 = x
            elif i == self.f8_index:
                f8 = x
        return x.to(self.dtype), f8.to(self.dtype), f4.to(self.dtype)  # type: ignore[arg-type]


class _FastLiteValueEncoder(nn.Module):
    def __init__(self, enc: LiteValueEncoder, kw: dict[str, object]) -> None:
        super().__init__()
        self.extra_channels = enc.extra_channels
        self.trunk = _FastLiteTrunk(enc.trunk, kw)
        self.fuser = _FastFuser(enc.fuser, enc.trunk.channels[2], kw)

    def forward(self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        f16 = self.trunk(torch.cat([image, masks.to(image.dtype)], dim=1))[0]
        return self.fuser(f16, key_f16)


class _FastUpsample(nn.Module):
    def __init__(self, blk: UpsampleBlock, kw: dict[str, object], out_act: str | None = None) -> None:
        super().__init__()
        self.skip_conv = FusedConv2d.from_conv(blk.skip_conv, **kw)
        self.out_conv = _FastResBlock(blk.out_conv, kw, out_act=out_act)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip.shape[0] == up.shape[0]:
            x = self.skip_conv(skip, up)
        else:  # skip has batch 1: convolve once, broadcast over the objects
            x = self.skip_conv(skip) + up
        return self.out_conv(x)


class _FastDecoder(nn.Module):
    """:class:`Decoder` with the compress ResBlock split (the f16_thin half runs once per frame) and the ReLU
    before ``pred`` fused into the last ResBlock."""

    def __init__(self, dec: Decoder, value_dim: int, kw: dict[str, object]) -> None:
        super().__init__()
        self.value_dim = value_dim
        self.compress = _FastResBlock(dec.compress, kw, split=value_dim)
        self.up_16_8 = _FastUpsample(dec.up_16_8, kw)
        self.up_8_4 = _FastUpsample(dec.up_8_4, kw, out_act="relu")
        self.pred = FusedConv2d.from_conv(dec.pred, **dict(kw, channels_last=True))

    def forward(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
                shared: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Decoder.forward`; or ``f16`` = readout (N, Cv, h, w) and ``shared`` = f16_thin (1, Cv, h, w)."""
        x = self.compress(f16, shared)
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(x)
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)


def _fast_resnet_block(blk: nn.Module, kw: dict[str, object]) -> _FastResNetBlock:
    ds = None
    if blk.downsample is not None:  # type: ignore[union-attr]
        ds = FusedConv2d.from_conv(blk.downsample[0], blk.downsample[1], **kw)  # type: ignore[index]
    if isinstance(blk, Bottleneck):
        convs = [FusedConv2d.from_conv(blk.conv1, blk.bn1, act="relu", **kw),
                 FusedConv2d.from_conv(blk.conv2, blk.bn2, act="relu", **kw),
                 FusedConv2d.from_conv(blk.conv3, blk.bn3, act="relu", **kw)]
    elif isinstance(blk, BasicBlock):
        convs = [FusedConv2d.from_conv(blk.conv1, blk.bn1, act="relu", **kw),
                 FusedConv2d.from_conv(blk.conv2, blk.bn2, act="relu", **kw)]
    else:
        raise TypeError(f"not a ResNet block: {type(blk).__name__}")
    return _FastResNetBlock(convs, ds)


class FastRDEVOS(RDEVOS):
    """The class of :func:`inference_network` copies: same methods, the decoder and fuser take unexpanded
    per-frame tensors."""

    def encode_value(self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, k = masks.shape[:2]
        extra = mask_channels(masks.to(image.dtype), self.config.single_object)
        image = image.unsqueeze(1).expand(b, k, *image.shape[1:]).reshape(b * k, *image.shape[1:])
        value = self.value_encoder(image, f16, extra)  # the fuser broadcasts f16 over each frame's objects
        return value.reshape(b, k, *value.shape[1:])

    def segment(self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor,
                f4: torch.Tensor) -> torch.Tensor:
        return self.decoder(readout, f8, f4, shared=f16_thin.to(readout.dtype))


def share_layout_(model: RDEVOS, dtype: torch.dtype, channels_last: bool) -> None:
    """Store the weights the copy takes unchanged (2-D convs without BatchNorm) in ``channels_last``, in place, so
    that the copy shares them instead of holding a second copy: values, dtypes and state-dict keys do not change.

    Only when the copy computes in the network's dtype on CPU (fp32): otherwise nothing can be shared.
    """
    prm = next(model.parameters())
    if not channels_last or dtype != prm.dtype or prm.device.type != "cpu":
        return
    bn_convs = set()
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck, KeyEncoder, ValueEncoder, MBConv, EfficientNetLite)):
            bn_convs.update(id(c) for c in m.children() if isinstance(c, nn.Conv2d))
            for c in m.children():
                if isinstance(c, nn.Sequential):  # ResNet downsample: conv + BN
                    bn_convs.update(id(x) for x in c if isinstance(x, nn.Conv2d))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in bn_convs and m.weight.ndim == 4 and \
                    not m.weight.is_contiguous(memory_format=torch.channels_last):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def inference_network(model: RDEVOS, *, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                      fused: bool | None = None, fp32_stride: int = 8) -> FastRDEVOS:
    """A fast inference copy of ``model`` (on the model's device) computing in ``dtype``; see the module doc.

    Args:
        dtype: weight/activation dtype of the convolutions, linear layers and the memory compressor.
        channels_last: keep 2-D convolution weights (and so activations) in ``channels_last``.
        fused: use oneDNN fused convolutions; default: on CPU when the build has them.
        fp32_stride: with a reduced ``dtype``, the key encoder's stages up to this output stride (0 = none, 2, 4, 8,
            16 = all) still compute in fp32, from the fp32 image. The default 8 (the stride-4 and stride-8 features
            the decoder's skips and the keys are built from) keeps bf16 masks near fp32: on 8 held-out DAVIS
            sequences with the embedded model, mean J&F change +0.09 instead of +0.33, lowest label agreement
            99.88 % instead of 99.53 %, for about 13 % more time (AMD EPYC, AVX512-BF16).
    """
    if fp32_stride not in FP32_STRIDES:
        raise ValueError(f"fp32_stride must be one of {FP32_STRIDES}, got {fp32_stride!r}")
    if dtype == torch.float32:
        fp32_stride = 0
    device = next(model.parameters()).device
    share_layout_(model, dtype, channels_last)
    if fused is None:
        fused = device.type == "cpu" and mkldnn_fusion_available()
    kw: dict[str, object] = {"dtype": dtype, "channels_last": channels_last, "fused": fused}
    was_training = model.training
    model.eval()
    try:
        # Shallow module copy: the modules that are replaced below are never copied, the rest (CBAM, the memory
        # compressor, small convs) are deep-copied and converted.
        fast = copy.copy(model)
        fast.__dict__.pop(_CACHE_ATTR, None)
        fast.inference_defaults = dict(model.inference_defaults)
        fast._modules = dict(model._modules)
        fast._parameters = dict(model._parameters)
        fast._buffers = dict(model._buffers)
        fast.__class__ = FastRDEVOS
        cfg = model.config
        if isinstance(model.key_encoder, KeyEncoder):
            fast.key_encoder = _FastKeyEncoder(model.key_encoder, kw, fp32_stride)
        else:
            fast.key_encoder = _FastLiteTrunk(model.key_encoder, kw, fp32_stride)  # type: ignore[arg-type]
        if isinstance(model.value_encoder, ValueEncoder):
            fast.value_encoder = _FastResNetValueEncoder(model.value_encoder, kw)
        else:
            fast.value_encoder = _FastLiteValueEncoder(model.value_encoder, kw)  # type: ignore[arg-type]
        fast.key_proj = FusedConv2d.from_conv(model.key_proj.key_proj, **kw)
        fast.key_comp = FusedConv2d.from_conv(model.key_comp, **kw)
        fast.decoder = _FastDecoder(model.decoder, cfg.value_dim, kw)
        # Modules kept as they are (CBAM, SAM): shared with the user's network in its dtype, else converted copies.
        if dtype != next(model.parameters()).dtype:
            fast.value_encoder.fuser.attention = copy.deepcopy(fast.value_encoder.fuser.attention).to(dtype)
            if not cfg.single_object:
                fast.mem_compress = copy.deepcopy(model.mem_compress).to(dtype)
    finally:
        model.train(was_training)
    shared = {id(m) for m in model.modules()}
    for m in fast.modules():
        if id(m) not in shared:  # the user's modules keep their mode and requires_grad flags
            m.training = False
            for prm in m.parameters(recurse=False):
                prm.requires_grad_(False)
    logger.debug("inference network: dtype %s, channels_last %s, oneDNN fusion %s", dtype, channels_last, fused)
    return fast  # type: ignore[return-value]


def _weights_key(model: nn.Module) -> tuple[tuple[int, int, int], ...]:
    """Identity, storage and in-place version of every tensor: changes when weights are loaded, trained, moved or
    cast (``module.to`` swaps ``.data``, which keeps the version counter)."""
    return tuple((id(t), t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def cached_inference_network(model: RDEVOS, *, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                             fp32_stride: int = 8) -> FastRDEVOS:
    """:func:`inference_network`, reused while ``model``'s weights, device and the options are unchanged.

    The last copy is kept on ``model`` as a plain attribute (not in its state dict), so engines made one after the
    other for the same network (one per video) fold it once.
    """
    device = next(model.parameters()).device
    share_layout_(model, dtype, channels_last)  # before the key: it may move tensors (once)
    key = (str(device), dtype, channels_last, fp32_stride, _weights_key(model))
    hit = model.__dict__.get(_CACHE_ATTR)
    if hit is not None and hit[0] == key:
        return hit[1]
    model.__dict__.pop(_CACHE_ATTR, None)  # drop the old copy before building the new one (peak memory)
    fast = inference_network(model, dtype=dtype, channels_last=channels_last, fp32_stride=fp32_stride)
    model.__dict__[_CACHE_ATTR] = (key, fast)
    return fast
