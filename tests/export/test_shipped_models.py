"""Every shipped video model exported as a user does it (``rdevos export``), then run end to end on real frames at
three frame sizes the graphs were not traced with (traced on 64x96): labels equal to the PyTorch engine's.

rdevos-lite2 (then the default, EfficientNet-Lite2 key encoder with TF "SAME" padding) exported fine but failed on every
real frame: the traced graphs kept the padding of the 64x96 example (ONNX: ``Concat node
'/value_encoder/fuser/Concat' ... mismatched dimensions``; TorchScript: a size error in the value encoder).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos import InferenceConfig, InferenceEngine, ModelConfig
from rdevos.cli import main
from rdevos.hub import load_model, save_checkpoint
from rdevos.hub.registry import DEFAULT_MODEL, REGISTRY
from rdevos.model.network import RDEVOS
from tests.conftest import SAMPLE, sane_init_, split_objects
from tests.export.conftest import onnxruntime_or_skip

#: Frame sizes (W, H), the bundled 480x270 clip resized: 240x135 (pads to 144x240: H/16 and W/16 odd), 333x187
#: (192x336) and 176x99 (112x176) -- none of them the traced 64x96 or the self-check's 80x112.
SIZES = [(240, 135), (333, 187), (176, 99)]
#: Frames per clip: the mask on frame 0, frame 1 into memory (mem_every 1: an RDE update through the compress
#: graph), frame 2 read from the updated memory.
FRAMES = 3
#: The official architecture's module types (ResNet-50-style bottleneck key encoder, ResNet-18 value encoder) at a
#: fraction of its widths and depths, random weights.
OFFICIAL_SMALL = ModelConfig(key_block="bottleneck", key_layers=(1, 1, 1), key_width=16, value_layers=(1, 1, 1),
                             value_width=8, key_dim=16, value_dim=32, decoder_dims=(16, 16), cbam_reduction=4)
#: Every model shipped inside the package (the registry's embedded weights; the default first), and the official
#: architecture.
MODELS = [DEFAULT_MODEL, *(n for n, spec in REGISTRY.items() if spec.resource and n != DEFAULT_MODEL), "official-small"]


@pytest.fixture(scope="module")
def official_small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = sane_init_(RDEVOS(OFFICIAL_SMALL), seed=3).eval()
    with torch.no_grad():
        model.mem_compress.compress_value.weight.mul_(0.3)  # keeps the random-weight RDE bounded
    return save_checkpoint(model, tmp_path_factory.mktemp("official") / "official_small.pt")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, official_small_ckpt: Path):  # noqa: ANN201
    """Exports made on first use with the CLI (native size, top-k 20, memory every frame, any number of objects):
    (folder, what the command printed)."""
    made: dict[tuple[str, str], tuple[Path, str]] = {}
    root = tmp_path_factory.mktemp("shipped")

    def get(model: str, fmt: str) -> tuple[Path, str]:
        if (model, fmt) not in made:
            out = root / f"{model}-{fmt}"
            spec = str(official_small_ckpt) if model == "official-small" else model
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                rc = main(["-q", "export", "--format", fmt, "--model", spec, "-o", str(out), "--resolution", "native",
                           "--top-k", "20", "--mem-every", "1"])
            assert rc == 0
            made[model, fmt] = out, stdout.getvalue()
        return made[model, fmt]

    return get


def _clip(size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    frames = [np.asarray(Image.open(SAMPLE / "frames" / f"{i:05d}.jpg").convert("RGB").resize(size, Image.BILINEAR))
              for i in range(FRAMES)]
    mask = np.asarray(Image.open(SAMPLE / "first_mask.png").resize(size, Image.NEAREST))
    return frames, split_objects((mask > 0).astype(np.uint8), (2, 5))


def _engine(fmt: str, folder: Path):  # noqa: ANN202
    if fmt == "onnx":
        from rdevos.export import OnnxEngine

        return OnnxEngine(folder, threads=1)
    from rdevos.export import TorchScriptEngine

    return TorchScriptEngine(folder)


@pytest.fixture(scope="module")
def reference(official_small_ckpt: Path):  # noqa: ANN201
    """The PyTorch engine's labels per (model, size), computed once for both formats."""
    made: dict[tuple[str, tuple[int, int]], list[np.ndarray]] = {}

    def get(model: str, size: tuple[int, int], config: InferenceConfig) -> list[np.ndarray]:
        if (model, size) not in made:
            net = load_model(str(official_small_ckpt) if model == "official-small" else model, device="cpu")
            frames, mask = _clip(size)
            ref = InferenceEngine(net, config, device="cpu")
            made[model, size] = [ref.probs_to_labels(p).numpy() for p in ref.run(frames, mask)]
        return made[model, size]

    return get


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("model", MODELS)
def test_export_runs_at_untraced_frame_sizes(model: str, fmt: str, exports, reference) -> None:
    if fmt == "onnx":
        onnxruntime_or_skip()
    folder, printed = exports(model, fmt)
    manifest = json.loads((folder / "manifest.json").read_text())
    config = InferenceConfig(**manifest["inference"])
    assert config.resolution is None and config.mem_every == 1
    eng = _engine(fmt, folder)
    for size in SIZES:
        frames, mask = _clip(size)
        expected = reference(model, size, config)
        eng.reset()
        same = total = updates = 0
        for i, frame in enumerate(frames):
            got = eng.probs_to_labels(eng.step(frame, mask if i == 0 else None, is_last=i == len(frames) - 1))
            assert got.shape == expected[i].shape == (size[1], size[0])
            same += int((got == expected[i]).sum())
            total += got.size
            updates += eng.memory_updated
        assert updates == 2  # frame 0 (the mask) and frame 1: one RDE update through the compress graph
        assert set(np.unique(got)) == {0, 2, 5}, size  # both objects still there: not a trivial comparison
        assert same / total >= 0.999, (size, same / total)
    # the export's own check ran the graphs at an untraced size too, and said so
    assert "checked against PyTorch at 64x96 and 80x112" in printed
    assert manifest["verification_sizes"] == [[64, 96], [80, 112]]
    assert max(manifest["verification_max_rel_diff"].values()) < 1e-4  # measured <= 3e-6


@torch.no_grad()
def test_fp16_compress_of_the_default_model_is_finite() -> None:
    """The fp16 export's compress graph on rdevos-lite2's features of real frames: the non-local affinity overflowed
    fp16 (NaN RDE from the first memory update, so an fp16 export failed its self-check); it now runs in fp32."""
    from rdevos.export.graphs import export_parts
    from rdevos.inference.preprocess import normalize, pad_divide_by

    net = load_model("rdevos-lite2", device="cpu")
    frames, mask = _clip(SIZES[0])
    masks = pad_divide_by(torch.from_numpy(mask > 0).float()[None], 16)[0][None]
    outs = {}
    for prec, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        parts = export_parts(net, prec)
        keys, values = [], []
        for f in frames[:2]:
            x = pad_divide_by(normalize(torch.from_numpy(f.copy()).permute(2, 0, 1).float() / 255), 16)[0][None]
            feats = parts["key_encoder"](x.to(dtype))
            keys.append(feats[0])
            values.append(parts["value_encoder"](x.to(dtype), feats[2], masks.to(dtype))[0])
        outs[prec] = parts["compress"](torch.stack(keys, 2), torch.stack(values, 2)[None])
    for half, full in zip(outs["fp16"], outs["fp32"]):
        assert half.dtype == torch.float16 and torch.isfinite(half).all()
        assert (half.float() - full).abs().max() / full.abs().max() < 2e-2  # fp16 features in, measured ~4e-3
