"""The inference copy (BatchNorm folded, channels_last, fused convolutions) against the unfolded network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos import InferenceConfig, InferenceEngine, Precision
from rdevos.hub.registry import LITE2_CONFIG
from rdevos.model.fastpath import cached_inference_network, inference_network, mkldnn_fusion_available
from rdevos.model.network import RDEVOS
from tests.conftest import SAMPLE, TINY, sane_init_, split_objects


def _outputs(net: RDEVOS, x: torch.Tensor, masks: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        feats = net.encode_key(x)
        value = net.encode_value(x, feats.f16, masks)
        logits = net.segment(value[0], feats.f16_thin[:1], feats.f8[:1], feats.f4[:1])
        k, v = net.compress_memory(torch.cat([feats.key[:, :, None]] * 2, 2), torch.cat([value[:, :, :, None]] * 2, 3))
    return [t.float() for t in (*feats, value, logits, k, v)]


@pytest.mark.parametrize("config", [TINY, LITE2_CONFIG], ids=["resnet", "lite2"])
@pytest.mark.parametrize("fused,channels_last", [(None, True), (None, False), (False, True)],
                         ids=["fused-cl", "fused-nchw", "eager"])
def test_fp32_copy_matches_unfolded_network(config, fused, channels_last) -> None:
    torch.manual_seed(0)
    net = sane_init_(RDEVOS(config)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_network(net, channels_last=channels_last, fused=fused)
    x, masks = torch.randn(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    for a, b in zip(_outputs(net, x, masks), _outputs(fast, x, masks)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    # The user's network keeps its numbers: same keys, values and dtypes; no BatchNorm folded into it. (In fp32 the
    # weights the copy shares may now be stored channels_last.) Its state dict still loads strictly.
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k, v in after.items():
        assert torch.equal(v, before[k]) and v.dtype == before[k].dtype, k
    RDEVOS(config).load_state_dict(after, strict=True)


def test_fp32_copy_shares_unchanged_weights(tiny_model) -> None:
    net = RDEVOS(TINY).eval()
    net.load_state_dict(tiny_model.state_dict())
    fast = inference_network(net)
    conv = fast.decoder.up_8_4.out_conv.conv1
    assert conv.weight.data_ptr() == net.decoder.up_8_4.out_conv.conv1.weight.data_ptr()
    assert fast.mem_compress is net.mem_compress  # unchanged module, shared
    assert all(p.requires_grad for p in net.parameters())  # the user's flags are left alone
    bf = inference_network(net, dtype=torch.bfloat16)
    assert bf.mem_compress is not net.mem_compress and bf.mem_compress.compress_key.weight.dtype == torch.bfloat16


def test_bf16_copy_is_close() -> None:
    torch.manual_seed(0)
    net = sane_init_(RDEVOS(TINY)).eval()
    fast = inference_network(net, dtype=torch.bfloat16)
    assert all(b.dtype == torch.bfloat16 for b in fast.decoder.buffers())
    x, masks = torch.randn(1, 3, 64, 96), torch.rand(1, 2, 64, 96)
    ref = _outputs(net, x, masks)
    out = _outputs(fast, x.bfloat16().contiguous(memory_format=torch.channels_last), masks)
    for a, b in zip(ref, out):
        assert (b - a).abs().max() <= 0.05 * a.abs().max() + 1e-3


@pytest.mark.parametrize("config", [TINY, LITE2_CONFIG], ids=["resnet", "lite2"])
def test_bf16_copy_keeps_high_resolution_key_stages_in_fp32(config) -> None:
    """fp32_stride=8: the key encoder's stride-2..8 stages compute in fp32 from the fp32 image, the rest in bf16;
    every feature leaves encode_key in bf16, and f4/f8 are closer to fp32 than from an all-bf16 copy."""
    torch.manual_seed(0)
    net = sane_init_(RDEVOS(config)).eval()
    x = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = net.encode_key(x)
        errs = {}
        for stride in (0, 8):
            fast = inference_network(net, dtype=torch.bfloat16, fp32_stride=stride)
            enc = fast.key_encoder
            first = enc.conv1 if hasattr(enc, "conv1") else enc.stem
            last = enc.layer3[-1].convs[-1] if hasattr(enc, "layer3") else enc.blocks[-1].project
            assert first.weight.dtype == (torch.float32 if stride else torch.bfloat16)
            assert last.weight.dtype == torch.bfloat16
            feats = fast.encode_key(x)
            assert all(t.dtype == torch.bfloat16 for t in feats)
            errs[stride] = [((b.float() - a).abs().max() / a.abs().max()).item() for a, b in zip(ref, feats)]
    f8, f4 = 3, 4
    assert errs[8][f4] < errs[0][f4] and errs[8][f8] < errs[0][f8], errs
    with pytest.raises(ValueError, match="fp32_stride"):
        inference_network(net, dtype=torch.bfloat16, fp32_stride=3)
    with pytest.raises(ValueError, match="fp32_stride"):
        InferenceConfig(fp32_stride=32)


def test_fusion_ops_present_on_cpu() -> None:
    # The oneDNN fused convolution is what makes the CPU path fast; a torch build without it falls back to eager.
    assert mkldnn_fusion_available() == hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def test_copy_is_cached_until_weights_change(tiny_model) -> None:
    net = RDEVOS(TINY).eval()
    net.load_state_dict(tiny_model.state_dict())
    a = cached_inference_network(net)
    assert cached_inference_network(net) is a
    assert cached_inference_network(net, dtype=torch.bfloat16) is not a
    net.load_state_dict(tiny_model.state_dict())  # in-place copy: new tensor versions
    assert cached_inference_network(net) is not a
    assert "_rdevos_inference_copy" not in str(list(net.state_dict()))  # never in the checkpoint


def test_engine_fast_path_matches_unfolded_engine(tiny_model, clip) -> None:
    """The engine on its inference copy gives the probabilities of the engine on the plain network (fp32)."""
    frames, mask = clip
    cfg = InferenceConfig(resolution=None, mem_every=2)
    fast = InferenceEngine(tiny_model, cfg)
    plain = InferenceEngine(tiny_model, cfg)
    plain.net = tiny_model  # type: ignore[assignment]  # the unfolded network, as the engine used it before
    for a, b in zip(fast.run(frames, mask), plain.run(frames, mask)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-4)


def test_bf16_labels_agree_with_fp32_on_the_sample_clip_with_the_embedded_model() -> None:
    """The bar of the bf16 path: >= 99 % equal labels to fp32 with trained weights on a real clip."""
    from rdevos import load_model

    net = load_model()
    files = sorted((SAMPLE / "frames").glob("*.jpg"))[:12]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    mask = split_objects((np.asarray(Image.open(SAMPLE / "first_mask.png")) > 0).astype(np.uint8), (1, 2))
    labels = {}
    for p in (Precision.FP32, Precision.BF16):
        eng = InferenceEngine(net, InferenceConfig.for_model(net.inference_defaults, precision=p))
        labels[p] = [eng.probs_to_labels(prob).numpy() for prob in eng.run(frames, mask)]
    agree = np.mean([(a == b).mean() for a, b in zip(labels[Precision.FP32], labels[Precision.BF16])])
    assert agree >= 0.99, agree
