"""The numpy runtime: preprocessing equals the engine's torch code, and it runs in a process without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rdevos.export.runtime as rt
from rdevos import InferenceEngine
from rdevos.inference.preprocess import normalize, pad_divide_by, resize_image, resize_labels, resized_size
from rdevos.model.network import RDEVOS, aggregate_probs
from tests.export.conftest import CONFIG


@pytest.mark.parametrize("src,dst", [((37, 53), (20, 30)), ((20, 30), (81, 101)), ((135, 240), (96, 170)),
                                     ((16, 16), (16, 40)), ((270, 480), (480, 853))])
def test_resizes_match_torch(src: tuple[int, int], dst: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *src, generator=g)
    np.testing.assert_allclose(rt.resize(x.numpy(), dst, "bicubic"), resize_image(x, dst).numpy(), atol=1e-5)
    bil = F.interpolate(x[None], size=dst, mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(rt.resize(x.numpy(), dst, "bilinear"), bil.numpy(), atol=1e-5)
    labels = torch.randint(0, 5, src, generator=g)
    assert (rt.resize_labels(labels.numpy(), dst) == resize_labels(labels, dst).numpy()).all()
    assert rt.resized_size(*src, 48) == resized_size(*src, 48)


def test_normalise_pad_and_aggregate_match_torch(sample_clip) -> None:
    frames, _ = sample_clip
    img = torch.from_numpy(frames[0].copy()).permute(2, 0, 1).float() / 255
    ref, ref_pad = pad_divide_by(normalize(img), 16)
    mean = np.asarray([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
    std = np.asarray([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
    got, pad = rt.pad_divide_by((rt.to_rgb(frames[0]) - mean) / std, 16)
    assert pad == ref_pad and got.shape == tuple(ref.shape)
    np.testing.assert_array_equal(got, ref.numpy())
    p = torch.rand(3, 8, 9, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(rt.aggregate(p.numpy()), aggregate_probs(p).numpy(), atol=1e-6)


_CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    export_dir, data = sys.argv[1:3]
    sys.path.insert(0, export_dir)
    import numpy as np
    from rdevos_runtime import OnnxEngine  # the runtime copy written next to the graphs
    clip = np.load(data)
    frames = [clip[f"f{i}"] for i in range(int(clip["n"]))]
    eng = OnnxEngine(export_dir, threads=1)
    labels = np.stack([eng.probs_to_labels(p) for p in eng.run(frames, clip["mask"])])
    np.save(data + ".labels.npy", labels)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "rdevos") and sys.modules[m] is not None)
    print(json.dumps({"loaded": loaded, "ids": eng.object_ids}))
""")


def test_runs_without_torch(tmp_path: Path, onnx_export: Path, export_net: RDEVOS, sample_clip) -> None:
    """The export's rdevos_runtime.py (a copy of rdevos/export/runtime.py) in a process where torch cannot be
    imported gives the PyTorch engine's labels."""
    frames, mask = sample_clip
    frames = frames[:8]  # the full-length comparison is test_onnx.py's; this one checks the torch-free process
    data = tmp_path / "clip.npz"
    np.savez(data, n=len(frames), mask=mask, **{f"f{i}": f for i, f in enumerate(frames)})
    assert (onnx_export / "rdevos_runtime.py").read_bytes() == Path(rt.__file__).read_bytes()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(onnx_export), str(data)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"loaded": [], "ids": [3, 7]}
    got = np.load(str(data) + ".labels.npy")
    eng = InferenceEngine(export_net, CONFIG, device="cpu")
    ref = np.stack([eng.probs_to_labels(p).numpy() for p in eng.run(frames, mask)])
    assert got.shape == ref.shape == (len(frames), *mask.shape)
    assert (got == ref).mean() >= 0.999
