"""Fixtures for the export tests: a small random-weight network, a real clip and one shared ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.config import InferenceConfig
from rdevos.model.network import RDEVOS
from tests.conftest import SAMPLE, TINY, sane_init_, split_objects

#: Clip size (W, H): the bundled 480x270 sample halved; pads to 144x240 (the exports are traced on 64x96).
SIZE = (240, 135)
NUM_FRAMES = 18
#: Settings of the shared export: native size, memory every 3rd frame -> 5 RDE updates over the clip.
CONFIG = InferenceConfig(top_k=20, mem_every=3, resolution=None)


def onnxruntime_or_skip():  # noqa: ANN201
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'rdevos[export]')")


@pytest.fixture(scope="session")
def export_net() -> RDEVOS:
    """TINY network with deterministic random weights; the value squeeze conv is scaled by 0.3 (as in
    tests/reference/test_parity.py) so the random-weight RDE stays bounded over many updates."""
    torch.manual_seed(0)
    model = sane_init_(RDEVOS(TINY), seed=0).eval()
    with torch.no_grad():
        model.mem_compress.compress_value.weight.mul_(0.3)
    return model


@pytest.fixture(scope="session")
def sample_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """NUM_FRAMES real frames of the bundled sample at SIZE and a 2-object first-frame mask with labels {3, 7}."""
    frames = [np.asarray(Image.open(SAMPLE / "frames" / f"{i:05d}.jpg").convert("RGB").resize(SIZE, Image.BILINEAR))
              for i in range(NUM_FRAMES)]
    mask = np.asarray(Image.open(SAMPLE / "first_mask.png").resize(SIZE, Image.NEAREST))
    return frames, split_objects(mask, (3, 7))


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory: pytest.TempPathFactory, export_net: RDEVOS) -> Path:
    """fp32 ONNX export with a dynamic object axis (CONFIG settings)."""
    onnxruntime_or_skip()
    from rdevos.export import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(export_net, out, config=CONFIG)
    return out


@pytest.fixture(scope="session")
def torchscript_export(tmp_path_factory: pytest.TempPathFactory, export_net: RDEVOS) -> Path:
    """fp32 TorchScript export with a dynamic object axis (CONFIG settings)."""
    from rdevos.export import export_torchscript

    out = tmp_path_factory.mktemp("torchscript")
    export_torchscript(export_net, out, config=CONFIG)
    return out
