"""ONNX export: manifest, end-to-end agreement of OnnxEngine with the PyTorch InferenceEngine, variants, errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rdevos import InferenceConfig, InferenceEngine, InputError
from rdevos.export import MissingDependencyError, OnnxEngine, export_model, export_onnx
from rdevos.model.network import RDEVOS
from tests.export.conftest import CONFIG, onnxruntime_or_skip

#: Label agreement with the PyTorch engine, per clip (fp32).
AGREEMENT = 0.999


def _compare(model: RDEVOS, engine: OnnxEngine, config: InferenceConfig, frames: list[np.ndarray],
             masks: dict[int, np.ndarray]) -> tuple[float, float, int, np.ndarray]:
    """Run both engines; returns (label agreement over the clip, max prob difference, memory updates, last labels)."""
    ref = InferenceEngine(model, config, device="cpu")
    same = total = updates = 0
    worst = 0.0
    labels = np.zeros(0)
    for i, f in enumerate(frames):
        last = i == len(frames) - 1
        a = ref.step(f, masks.get(i), is_last=last).numpy()
        b = engine.step(f, masks.get(i), is_last=last)
        assert b.shape == a.shape and b.dtype == np.float32
        assert engine.memory_updated == ref.memory_updated
        updates += engine.memory_updated
        labels = engine.probs_to_labels(b)
        ref_labels = ref.probs_to_labels(torch.from_numpy(a)).numpy()
        same += int((labels == ref_labels).sum())
        total += labels.size
        worst = max(worst, float(np.abs(a - b).max()))
    assert engine.object_ids == ref.object_ids
    return same / total, worst, updates, labels


def test_manifest_describes_the_graphs(onnx_export: Path, export_net: RDEVOS) -> None:
    onnx = pytest.importorskip("onnx")
    m = json.loads((onnx_export / "manifest.json").read_text())
    assert m["format"] == "rdevos-export" and m["backend"] == "onnx" and m["objects"] == "dynamic"
    assert m["model_config"] == export_net.config.to_dict()
    assert m["inference"]["top_k"] == CONFIG.top_k and m["inference"]["mem_every"] == CONFIG.mem_every
    assert m["preprocess"]["pad_multiple"] == 16 and m["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert set(m["graphs"]) == {"key_encoder", "value_encoder", "segment", "compress"}
    assert max(m["verification_max_rel_diff"].values()) < 1e-4
    elem = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64"}
    ops = set()
    for name, g in m["graphs"].items():
        model = onnx.load(str(onnx_export / g["file"]))
        onnx.checker.check_model(model)
        assert g["opset"] == m["opset"] == max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        for declared, actual in ((g["inputs"], model.graph.input), (g["outputs"], model.graph.output)):
            got = [{"name": v.name, "dtype": elem[v.type.tensor_type.elem_type],
                    "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in actual]
            assert got == declared, name
        ops |= {n.op_type for n in model.graph.node}
    assert {"TopK", "Gather", "Conv"} <= ops
    # dynamic frame size: the image's H and W are symbolic
    assert m["graphs"]["key_encoder"]["inputs"][0]["shape"] == [1, 3, "H", "W"]


def test_end_to_end_matches_pytorch_engine(onnx_export: Path, export_net: RDEVOS, sample_clip) -> None:
    """18 real frames, 2 objects, native size, memory every 3rd frame (5 RDE updates after the first frame)."""
    frames, mask = sample_clip
    eng = OnnxEngine(onnx_export, threads=1)
    agree, worst, updates, labels = _compare(export_net, eng, CONFIG, frames, {0: mask})
    assert agree >= AGREEMENT, agree
    assert worst < 5e-3, worst  # measured 2.4e-3 max prob difference on the bundled clip (~1e-6 on DAVIS bear at 480p), 6 RDE updates of random weights
    assert updates == 6  # frame 0 + frames 3, 6, 9, 12, 15
    assert set(np.unique(labels)) == {0, 3, 7}  # both objects survive: not a trivial comparison
    assert eng.memory_nbytes() > 0 and eng.frame_index == len(frames)


def test_objects_added_mid_video_and_overrides(onnx_export: Path, export_net: RDEVOS, sample_clip) -> None:
    """A second object annotated on frame 4 gets its own memory group; mem_every/top_k overridden at load."""
    frames, mask = sample_clip
    config = CONFIG.replace(mem_every=2, top_k=10)
    eng = OnnxEngine(onnx_export, threads=1, mem_every=2, top_k=10)
    masks = {0: np.where(mask == 3, 3, 0).astype(np.uint8), 4: np.where(mask == 7, 7, 0).astype(np.uint8)}
    agree, _, updates, labels = _compare(export_net, eng, config, frames[:12], masks)
    assert agree >= AGREEMENT, agree
    assert eng.object_ids == [3, 7] and len(eng._groups) == 2
    assert updates == 6  # frames 0, 2, 4 (also the annotation), 6, 8, 10; not 11 (last)


def test_fixed_objects_and_resize(tmp_path: Path, export_net: RDEVOS, sample_clip) -> None:
    """--objects 2 bakes K into the graphs; short side resized to 96 (bicubic in, bilinear out), mem_every 2."""
    onnxruntime_or_skip()
    frames, mask = sample_clip
    config = InferenceConfig(top_k=20, mem_every=2, resolution=96)
    export_onnx(export_net, tmp_path, config=config, objects=2)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["objects"] == 2 and m["inference"]["resolution"] == 96
    assert m["graphs"]["segment"]["outputs"][0]["shape"] == [2, "H", "W"]
    eng = OnnxEngine(tmp_path, threads=1)
    agree, worst, updates, _ = _compare(export_net, eng, config, frames, {0: mask})
    assert agree >= AGREEMENT, agree
    assert worst < 1e-3 and updates == 9
    eng.reset()
    with pytest.raises(InputError, match="exactly 2 object.*--objects dynamic"):
        eng.step(frames[0], np.where(mask == 3, 3, 0).astype(np.uint8))
    eng.reset()
    eng.step(frames[0], mask)
    with pytest.raises(InputError, match="fixed object count"):
        eng.step(frames[1], np.where(mask == 3, 9, 0).astype(np.uint8))


def test_fp16_export(tmp_path: Path, export_net: RDEVOS, sample_clip) -> None:
    """fp16 weights, features and memory (affinity, softmax and probabilities fp32): close to the fp32 engine."""
    onnxruntime_or_skip()
    frames, mask = sample_clip
    export_onnx(export_net, tmp_path, config=CONFIG, precision="fp16")
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["precision"] == "fp16"
    assert m["graphs"]["key_encoder"]["inputs"][0]["dtype"] == "float16"
    assert m["graphs"]["segment"]["outputs"][0]["dtype"] == "float32"
    assert max(m["verification_max_rel_diff"].values()) < 1e-2  # against the fp16 PyTorch parts
    eng = OnnxEngine(tmp_path, threads=1)
    agree, _, _, _ = _compare(export_net, eng, CONFIG, frames[:10], {0: mask})
    assert agree >= 0.98, agree  # measured ~0.99 against the fp32 PyTorch engine (random weights)


# ---------------------------------------------------------------------------------------------------- errors
def test_unknown_format_and_bad_arguments(tmp_path: Path, export_net: RDEVOS) -> None:
    with pytest.raises(InputError, match="unknown export format 'tflite'.*onnx, torchscript"):
        export_model(export_net, tmp_path, format="tflite")
    with pytest.raises(InputError, match="positive number or 'dynamic'"):
        export_model(export_net, tmp_path, objects=0)
    with pytest.raises(InputError, match="fp32 or fp16"):
        export_model(export_net, tmp_path, precision="bf16")
    with pytest.raises(InputError, match="opset 9 is too old"):
        export_onnx(export_net, tmp_path, opset=9)
    with pytest.raises(InputError, match="not a folder"):
        (tmp_path / "file").write_text("x")
        export_onnx(export_net, tmp_path / "file")


def test_missing_packages_name_the_extra(tmp_path: Path, onnx_export: Path, export_net: RDEVOS,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError, match=r"onnxruntime is not installed.*pip install 'rdevos\[export\]'"):
        OnnxEngine(onnx_export)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"needs the onnx package.*pip install 'rdevos\[export\]'"):
        export_onnx(export_net, tmp_path)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(folder: Path, **changes: object) -> None:
    p = folder / "manifest.json"
    m = json.loads(p.read_text())
    m.update(changes)
    p.write_text(json.dumps(m))


def test_manifest_mismatches_are_clear_errors(tmp_path: Path, onnx_export: Path, torchscript_export: Path) -> None:
    with pytest.raises(InputError, match="not an rdevos export: manifest.json not found"):
        OnnxEngine(tmp_path)
    with pytest.raises(InputError, match="torchscript export, not onnx; load it with .*TorchScriptEngine"):
        OnnxEngine(torchscript_export)

    d = _copy(onnx_export, tmp_path / "version")
    _edit_manifest(d, version=99)
    with pytest.raises(InputError, match="version 99 is not supported"):
        OnnxEngine(d)

    d = _copy(onnx_export, tmp_path / "tampered")
    with open(d / "segment.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match="segment.onnx does not match the manifest \\(sha256"):
        OnnxEngine(d)

    d = _copy(onnx_export, tmp_path / "renamed")
    m = json.loads((d / "manifest.json").read_text())
    m["graphs"]["segment"]["inputs"][-1]["name"] = "k"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="graph 'segment' .* does not match the manifest"):
        OnnxEngine(d)

    d = _copy(onnx_export, tmp_path / "missing")
    (d / "compress.onnx").unlink()
    with pytest.raises(InputError, match="compress.onnx of 'compress' is missing"):
        OnnxEngine(d)

    d = _copy(onnx_export, tmp_path / "bad")
    (d / "manifest.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        OnnxEngine(d)


def test_bad_frames_and_masks(onnx_export: Path, sample_clip) -> None:
    frames, mask = sample_clip
    eng = OnnxEngine(onnx_export, threads=1)
    with pytest.raises(InputError, match="differs from the frame size"):
        eng.step(frames[0], mask[:-1])
    with pytest.raises(InputError, match="no object"):
        eng.step(frames[0], np.zeros_like(mask))
    with pytest.raises(InputError, match="HxWx3"):
        eng.step(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="no frames"):
        next(eng.run([], mask))
