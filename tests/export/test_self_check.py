"""The export self-check runs the written graphs at a frame size and object count they were not traced with, and an
export whose graphs froze a shape fails loudly instead of reporting success.

The fault: ``SameConv2d`` padding computed with ``math.ceil``/``max`` (rdevos 0.x before the fix). Under the
tracer those turn the traced frame's size into constants, so the graphs pad for 64x96 whatever the input: exactly
right at the traced size, wrong everywhere else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rdevos import InputError, ModelConfig
from rdevos.export import ExportCheckError, export_onnx, export_torchscript
from rdevos.model.backbones import SameConv2d, same_padding
from rdevos.model.network import RDEVOS
from tests.conftest import sane_init_
from tests.export.conftest import CONFIG, onnxruntime_or_skip

#: A small network with an EfficientNet-Lite0 key encoder (TF "SAME" padding), random weights.
LITE0 = ModelConfig(key_backbone="efficientnet-lite0", value_layers=(1, 1, 1), value_width=8, key_dim=16,
                    value_dim=32, decoder_dims=(16, 8), cbam_reduction=4, rde_norm=True)


def _shape_freezing_pad(self: SameConv2d, x: torch.Tensor) -> torch.Tensor:
    pads = []
    for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                       (x.shape[-2], self.kernel_size[0], self.stride[0])):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


@pytest.fixture(scope="module")
def lite0_net() -> RDEVOS:
    return sane_init_(RDEVOS(LITE0), seed=2).eval()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_graph_that_froze_a_shape_fails_the_export(fmt: str, tmp_path: Path, lite0_net: RDEVOS,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if fmt == "onnx":
        onnxruntime_or_skip()
    export = export_onnx if fmt == "onnx" else export_torchscript
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "rdevos-export", "version": 1}))  # an old export's
    monkeypatch.setattr(SameConv2d, "_pad", _shape_freezing_pad)
    with pytest.raises(ExportCheckError, match=r"export self-check failed: graph 'key_encoder' on a 80x112 frame "
                                               r"with 3 object\(s\) \(traced on 64x96 with 2\)"):
        export(lite0_net, tmp_path, config=CONFIG)
    assert not (tmp_path / "manifest.json").exists()  # nothing points at the broken graphs
    # (with the real padding the same export passes: test_shipped_models.py exports EfficientNet-Lite2 networks)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch >= 2.10 marks jit.trace deprecated
def test_same_padding_is_traced_as_a_function_of_the_input_size() -> None:
    """Each stride-2 SAME conv pads by the size it gets at run time, not by the traced example's."""
    conv = SameConv2d(1, 1, 3, stride=2, bias=False).eval()
    with torch.no_grad():
        conv.weight.fill_(1.0)
        traced = torch.jit.trace(conv, torch.ones(1, 1, 8, 8))  # even: pads (0, 1)
        for h, w in ((8, 8), (7, 9), (5, 12)):  # odd sizes pad (1, 1)
            x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
            assert torch.equal(traced(x), conv(x)), (h, w)
    assert same_padding(7, 3, 2) == (1, 1) and same_padding(8, 3, 2) == (0, 1) and same_padding(8, 5, 1) == (2, 2)
    assert same_padding(9, 1, 2) == (0, 0) and same_padding(8, 3, 2, dilation=2) == (1, 2)


def test_a_foreign_manifest_is_not_overwritten(tmp_path: Path, lite0_net: RDEVOS) -> None:
    (tmp_path / "manifest.json").write_text('{"name": "my project"}')
    with pytest.raises(InputError, match="is not an rdevos export manifest; export into another folder"):
        export_torchscript(lite0_net, tmp_path, config=CONFIG)
    assert (tmp_path / "manifest.json").read_text() == '{"name": "my project"}'
