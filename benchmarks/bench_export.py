"""Speed of an ONNX export on onnxruntime (rdevos.export.OnnxEngine) against the PyTorch InferenceEngine.

Usage:
    python benchmarks/bench_export.py [--arch official|tiny] [--frames 12] [--resolution native|N] [--objects 2]
                                      [--threads 1] [--precision fp32|fp16] [--repeats 2] [-o out.json]

Same process, same frames (the bundled 480x270 sample clip, played back and forth to any length), same settings
(top-k 20, memory every 3rd frame), deterministic random weights (the value squeeze conv scaled by 0.3 so the
random-weight RDE stays bounded, as in tests/reference/test_parity.py). Each engine first runs a few untimed
warm-up frames; then the engines run the clip alternately ``--repeats`` times and the fastest run of each counts.
Prints JSON: wall and CPU seconds per frame of both and their ratios (PyTorch / onnxruntime; > 1 means onnxruntime
is faster; with --threads 1 the CPU-time ratio is the one to trust on a shared machine), the label agreement between
the two and the export time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rdevos import InferenceConfig, InferenceEngine, ModelConfig  # noqa: E402
from rdevos.export import OnnxEngine, export_onnx  # noqa: E402
from rdevos.io.sample import sample_clip_dir, sample_mask_path  # noqa: E402
from rdevos.model.network import RDEVOS  # noqa: E402
from tests.conftest import TINY, sane_init_, split_objects  # noqa: E402


def _clip(n: int, objects: int) -> tuple[list[np.ndarray], np.ndarray]:
    files = sorted(sample_clip_dir().glob("*.jpg"))
    order = list(range(len(files))) + list(range(len(files) - 2, 0, -1))
    cache: dict[int, np.ndarray] = {}
    frames = []
    for i in range(n):
        j = order[i % len(order)]
        if j not in cache:
            cache[j] = np.asarray(Image.open(files[j]).convert("RGB"))
        frames.append(cache[j])
    mask = np.asarray(Image.open(sample_mask_path()))
    return frames, split_objects((mask > 0).astype(np.uint8), tuple(range(1, objects + 1)))


def _model(arch: str) -> RDEVOS:
    torch.manual_seed(0)
    model = sane_init_(RDEVOS(ModelConfig() if arch == "official" else TINY), seed=1).eval()
    with torch.no_grad():
        model.mem_compress.compress_value.weight.mul_(0.3)
    return model


def _run(engine: InferenceEngine | OnnxEngine, frames: list[np.ndarray], mask: np.ndarray
         ) -> tuple[float, float, list[np.ndarray]]:
    """Returns wall and CPU seconds per frame (CPU time is robust to a shared core) and the label maps."""
    engine.reset()
    labels = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i, f in enumerate(frames):
        prob = engine.step(f, mask if i == 0 else None, is_last=i == len(frames) - 1)
        lab = engine.probs_to_labels(prob)
        labels.append(lab.numpy() if isinstance(lab, torch.Tensor) else lab)
    n = len(frames)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["official", "tiny"], default="official")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--resolution", default="native", help="short side, or 'native' (the sample is 480x270)")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="of the ONNX export")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    config = InferenceConfig(top_k=20, mem_every=3,
                             resolution=None if args.resolution == "native" else int(args.resolution))
    frames, mask = _clip(args.frames, args.objects)
    model = _model(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_onnx(model, tmp, config=config, precision=args.precision)
        export_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in Path(tmp).glob("*.onnx")) / 1e6
        engines = {"pytorch": InferenceEngine(model, config, device="cpu"),
                   "onnxruntime": OnnxEngine(tmp, threads=args.threads)}
        for eng in engines.values():
            _run(eng, frames[:args.warmup], mask)
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        labels: dict[str, list[np.ndarray]] = {}
        for _ in range(args.repeats):
            for name, eng in engines.items():
                w, c, labels[name] = _run(eng, frames, mask)
                wall[name] = min(wall.get(name, float("inf")), w)
                cpu[name] = min(cpu.get(name, float("inf")), c)
    agree = float(np.mean([(a == b).mean() for a, b in zip(labels["pytorch"], labels["onnxruntime"])]))
    h, w = frames[0].shape[:2]
    result = {
        "arch": args.arch, "frames": args.frames, "input_size": [w, h], "resolution": args.resolution,
        "objects": args.objects, "threads": args.threads, "onnx_precision": args.precision,
        "top_k": config.top_k, "mem_every": config.mem_every,
        "pytorch_s_per_frame": round(wall["pytorch"], 4), "onnxruntime_s_per_frame": round(wall["onnxruntime"], 4),
        "ratio_pytorch_over_onnxruntime": round(wall["pytorch"] / wall["onnxruntime"], 3),
        "pytorch_cpu_s_per_frame": round(cpu["pytorch"], 4),
        "onnxruntime_cpu_s_per_frame": round(cpu["onnxruntime"], 4),
        "cpu_ratio_pytorch_over_onnxruntime": round(cpu["pytorch"] / cpu["onnxruntime"], 3),
        "label_agreement": round(agree, 6), "export_s": round(export_s, 2), "onnx_mb": round(size_mb, 1),
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "cpu": platform.processor() or platform.machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
