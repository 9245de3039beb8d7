"""TorchScript export: the same streaming loop over traced graphs agrees with the PyTorch engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rdevos import InputError
from rdevos.export import TorchScriptEngine
from rdevos.model.network import RDEVOS
from tests.export.conftest import CONFIG
from tests.export.test_onnx import AGREEMENT, _compare


def test_manifest(torchscript_export: Path) -> None:
    m = json.loads((torchscript_export / "manifest.json").read_text())
    assert m["backend"] == "torchscript" and "opset" not in m
    assert sorted(g["file"] for g in m["graphs"].values()) == ["compress.pt", "key_encoder.pt", "segment.pt",
                                                                  "value_encoder.pt"]


def test_end_to_end_matches_pytorch_engine(torchscript_export: Path, export_net: RDEVOS, sample_clip) -> None:
    frames, mask = sample_clip
    eng = TorchScriptEngine(torchscript_export)
    agree, worst, updates, labels = _compare(export_net, eng, CONFIG, frames, {0: mask})  # type: ignore[arg-type]
    assert agree >= AGREEMENT and updates == 6
    assert worst < 5e-3, worst  # as the ONNX export: 2.4e-3 on the bundled clip after 6 random-weight RDE updates
    assert set(np.unique(labels)) == {0, 3, 7}


def test_onnx_export_is_refused(onnx_export: Path) -> None:
    with pytest.raises(InputError, match="onnx export, not torchscript; load it with OnnxEngine"):
        TorchScriptEngine(onnx_export)
