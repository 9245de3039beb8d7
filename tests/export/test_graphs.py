"""Each exported graph against the PyTorch network, on real frames at a size and object count the exports were
not traced with (traced on a 64x96 frame with 2 objects; checked on 144x240 with 3 objects)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rdevos.inference.preprocess import normalize, pad_divide_by
from rdevos.model.memory_read import query_affinity, topk_readout
from rdevos.model.network import RDEVOS, aggregate_probs
from tests.conftest import split_objects
from tests.export.conftest import CONFIG

#: Max |export - PyTorch| / max(1, max |PyTorch|) per graph output, fp32 (measured: <= 2e-6).
FP32_TOL = 1e-4

Runner = Callable[[str, dict[str, np.ndarray]], list[np.ndarray]]


def _onnx_runner(folder: Path) -> Runner:
    import onnxruntime as ort

    manifest = json.loads((folder / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = {n: ort.InferenceSession(str(folder / g["file"]), opts, providers=["CPUExecutionProvider"])
                for n, g in manifest["graphs"].items()}
    return lambda name, feeds: sessions[name].run(None, feeds)


def _torchscript_runner(folder: Path) -> Runner:
    manifest = json.loads((folder / "manifest.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated from torch 2.10
        mods = {n: torch.jit.load(str(folder / g["file"])) for n, g in manifest["graphs"].items()}
    order = {n: [t["name"] for t in g["inputs"]] for n, g in manifest["graphs"].items()}

    def run(name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = mods[name](*[torch.from_numpy(feeds[i]) for i in order[name]])
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run


@pytest.fixture(params=["onnx", "torchscript"])
def runner(request: pytest.FixtureRequest) -> Runner:
    folder = request.getfixturevalue(f"{request.param}_export")
    return _onnx_runner(folder) if request.param == "onnx" else _torchscript_runner(folder)


def _rel(a: np.ndarray, b: torch.Tensor) -> float:
    ref = b.detach().float().numpy()
    return float(np.abs(a.astype(np.float32) - ref).max() / max(1.0, np.abs(ref).max()))


def _frame(frames: list[np.ndarray], i: int) -> torch.Tensor:
    x = torch.from_numpy(frames[i].copy()).permute(2, 0, 1).float() / 255
    return pad_divide_by(normalize(x), 16)[0][None]


@torch.no_grad()
def test_graphs_match_pytorch(runner: Runner, export_net: RDEVOS, sample_clip) -> None:
    frames, mask = sample_clip
    model = export_net
    labels = split_objects((mask > 0).astype(np.uint8), (1, 2, 3))  # 3 objects (traced with 2)
    onehot = torch.stack([torch.from_numpy(labels == i) for i in (1, 2, 3)]).float()
    masks = aggregate_probs(pad_divide_by(onehot, 16)[0])[1:][None]  # 1, 3, H, W
    images = [_frame(frames, 0), _frame(frames, 6)]
    assert images[0].shape[-2:] == (144, 240)

    # key encoder
    feats = [model.encode_key(x) for x in images]
    for x, f in zip(images, feats):
        out = runner("key_encoder", {"image": x.numpy()})
        for a, b in zip(out, f):
            assert a.shape == tuple(b.shape)
            assert _rel(a, b) < FP32_TOL

    # value encoder
    values = [model.encode_value(x, f.f16, masks) for x, f in zip(images, feats)]  # 1, K, Cv, h, w
    (v,) = runner("value_encoder", {"image": images[1].numpy(), "f16": feats[1].f16.numpy(), "masks": masks.numpy()})
    assert v.shape == tuple(values[1].shape) and _rel(v, values[1]) < FP32_TOL

    # compress (the RDE update): [frame 0 memory, frame 6 memory]
    key2 = torch.stack([f.key for f in feats], dim=2)  # 1, Ck, 2, h, w
    value2 = torch.stack(values, dim=3)  # 1, K, Cv, 2, h, w
    rk, rv = model.compress_memory(key2, value2)
    ok, ov = runner("compress", {"key": key2.numpy(), "value": value2.numpy()})
    assert ok.shape == tuple(rk.shape) and ov.shape == tuple(rv.shape)
    assert _rel(ok, rk) < FP32_TOL and _rel(ov, rv) < FP32_TOL

    # segment: read the [RDE, frame 0] memory from frame 12, exactly as the engine does
    mem_key = torch.cat([rk, feats[0].key.unsqueeze(2)], dim=2).flatten(2)  # 1, Ck, N
    mem_v = torch.cat([rv, values[0].unsqueeze(3)], dim=3).flatten(3)  # 1, K, Cv, N
    mem_value = mem_v.flatten(1, 2).transpose(1, 2).contiguous()  # 1, N, K*Cv
    q = model.encode_key(_frame(frames, 12))
    h, w = q.key.shape[-2:]
    r = topk_readout(query_affinity(mem_key, q.key.flatten(2)), mem_value, CONFIG.top_k)[0]
    expected = torch.sigmoid(model.segment(r.t().reshape(3, -1, h, w), q.f16_thin, q.f8, q.f4)[:, 0])
    (prob,) = runner("segment", {"mem_key": mem_key.numpy(), "mem_value": mem_value.numpy(), "key": q.key.numpy(),
                                 "f16_thin": q.f16_thin.numpy(), "f8": q.f8.numpy(), "f4": q.f4.numpy(),
                                 "top_k": np.array(CONFIG.top_k, np.int64)})
    assert prob.shape == (3, 144, 240) and prob.dtype == np.float32
    assert _rel(prob, expected) < FP32_TOL
    # a different top_k is honoured (it is a graph input, not baked in)
    r5 = topk_readout(query_affinity(mem_key, q.key.flatten(2)), mem_value, 5)[0]
    exp5 = torch.sigmoid(model.segment(r5.t().reshape(3, -1, h, w), q.f16_thin, q.f8, q.f4)[:, 0])
    (prob5,) = runner("segment", {"mem_key": mem_key.numpy(), "mem_value": mem_value.numpy(), "key": q.key.numpy(),
                                  "f16_thin": q.f16_thin.numpy(), "f8": q.f8.numpy(), "f4": q.f4.numpy(),
                                  "top_k": np.array(5, np.int64)})
    assert _rel(prob5, exp5) < FP32_TOL and np.abs(prob5 - prob).max() > 1e-3


@torch.no_grad()
def test_rde_norm_compress_graph_matches_pytorch(tmp_path: Path, export_net: RDEVOS) -> None:
    """The embedded default model uses ModelConfig.rde_norm: the exported RDE update must apply it too."""
    import dataclasses

    from tests.export.conftest import onnxruntime_or_skip

    onnxruntime_or_skip()
    from rdevos.export import export_onnx

    net = RDEVOS(dataclasses.replace(export_net.config, rde_norm=True)).eval()
    net.load_state_dict(export_net.state_dict())
    with torch.no_grad():
        net.mem_compress.compress_key.weight.mul_(5.0)  # a growing SAM, as a from-scratch one is
    export_onnx(net, tmp_path, config=CONFIG)
    torch.manual_seed(2)
    key2 = torch.randn(1, net.config.key_dim, 2, 9, 15)
    value2 = torch.randn(1, 2, net.config.value_dim, 2, 9, 15)
    rk, rv = net.compress_memory(key2, value2)
    ok, ov = _onnx_runner(tmp_path)("compress", {"key": key2.numpy(), "value": value2.numpy()})
    assert _rel(ok, rk) < FP32_TOL and _rel(ov, rv) < FP32_TOL
    # and the norm matching is really in the graph: output norms equal the mean input norms
    np.testing.assert_allclose(np.linalg.norm(ok, axis=1), key2.norm(dim=1).mean(1, keepdim=True).numpy(), rtol=1e-4)
