"""Speed and memory of the rdevos engine against the reference (ModelScope) implementation, same process.

Usage:
    python benchmarks/bench_engine.py speed  [--frames 16] [--seq bear] [--repeat 2]  # 480p s/frame, fp32/bf16
    python benchmarks/bench_engine.py memory [--lengths 50 1000] [--short-side 240]  # peak RSS vs length

Both use the official architecture (64 M parameters) with deterministic random weights in the official key layout
(from tests/reference/modelscope_ref.py, which fetches the reference from the modelscope wheel on PyPI).
``memory`` runs each (implementation, length) in a fresh subprocess and reports its peak RSS.
Results are printed as JSON and as ratios against the reference measured in the same run.

``rdevos bench --reference`` (rdevos/eval/bench.py) runs this file as ``bench_engine.py _bench_child CONFIG_JSON``,
one fresh process per reference configuration: the package never imports this file or tests/reference/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "reference"))

import modelscope_ref as R  # noqa: E402

from rdevos import InferenceConfig, InferenceEngine, Precision  # noqa: E402
from rdevos.device import cpu_has_fast_bf16  # noqa: E402
from rdevos.model.network import RDEVOS  # noqa: E402


def _frames(seq: str, n: int, short_side: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """n frames of a DAVIS-2016 train sequence, played forwards and backwards to any length."""
    root = R.davis2016_dir()
    files = sorted((root / "JPEGImages" / seq).glob("*.jpg"))
    order = list(range(len(files))) + list(range(len(files) - 2, 0, -1))
    from PIL import Image

    def load(p: Path) -> np.ndarray:
        im = Image.open(p).convert("RGB")
        if short_side:
            w, h = im.size
            im = im.resize((int(w * short_side / h), short_side), Image.BILINEAR)
        return np.asarray(im)

    cache: dict[int, np.ndarray] = {}
    frames = []
    for i in range(n):
        j = order[i % len(order)]
        if j not in cache:
            cache[j] = load(files[j])
        frames.append(cache[j])
    mask = Image.open(root / "Annotations" / seq / "00000.png")
    if short_side:
        mask = mask.resize((frames[0].shape[1], frames[0].shape[0]), Image.NEAREST)
    labels = R.split_mask_by_bbox(np.asarray(mask), 2)
    return frames, labels


def _nets() -> tuple[torch.nn.Module, RDEVOS]:
    ref = R.make_reference_net(0)
    with torch.no_grad():
        ref.mem_compress.compress_value.weight.mul_(0.3)  # keep random-weight RDE values bounded (see parity test)
    ours = RDEVOS()
    ours.load_state_dict(ref.state_dict())
    return ref, ours.eval()


def _run_reference(net: torch.nn.Module, frames: list[np.ndarray], labels: np.ndarray, top_k: int,
                   mem_every: int) -> float:
    images = torch.stack([R.normalise(f) for f in frames])
    t0 = time.perf_counter()
    with torch.inference_mode():
        R.run_reference_core(net, images, R.onehot(labels), top_k=top_k, mem_every=mem_every)
    return time.perf_counter() - t0


def _run_ours(model: RDEVOS, frames: list[np.ndarray], labels: np.ndarray, config: InferenceConfig) -> float:
    eng = InferenceEngine(model, config, device="cpu")
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        eng.step(f, labels if i == 0 else None, is_last=i == len(frames) - 1)
    return time.perf_counter() - t0


def speed(args: argparse.Namespace) -> dict:
    """Reference fp32, rdevos fp32 and (optionally) rdevos bf16 on the same frames, interleaved ``--repeat`` times
    so that load from other processes on a shared machine shows up as spread rather than as a biased ratio."""
    torch.set_num_threads(args.threads)
    frames, labels = _frames(args.seq, args.frames)
    ref, ours = _nets()
    cfg = InferenceConfig(top_k=args.top_k, mem_every=args.mem_every, resolution=None)
    res: dict[str, object] = {"frames": args.frames, "size": list(frames[0].shape[:2]), "objects": 2,
                              "top_k": args.top_k, "mem_every": args.mem_every, "threads": args.threads,
                              "torch": torch.__version__, "cpu": _cpu(), "native_bf16": cpu_has_fast_bf16(),
                              "amx": _amx()}
    n_bf = min(len(frames), args.bf16_frames)
    cfg_bf = cfg.replace(precision=Precision.BF16)
    # Warm-up (allocator, oneDNN kernels, the engine's folded inference copy) on 3 frames, then the measured runs.
    _run_reference(ref, frames[:3], labels, args.top_k, args.mem_every)
    _run_ours(ours, frames[:3], labels, cfg)
    if args.bf16:
        _run_ours(ours, frames[:3], labels, cfg_bf)
    runs = []
    for _ in range(args.repeat):
        run: dict[str, float] = {}
        run["reference_fp32_s_per_frame"] = _run_reference(ref, frames, labels, args.top_k,
                                                           args.mem_every) / len(frames)
        run["rdevos_fp32_s_per_frame"] = _run_ours(ours, frames, labels, cfg) / len(frames)
        r = run["reference_fp32_s_per_frame"]
        run["speedup_fp32_vs_reference"] = r / run["rdevos_fp32_s_per_frame"]
        if args.bf16:
            run["rdevos_bf16_s_per_frame"] = _run_ours(ours, frames[:n_bf], labels, cfg_bf) / n_bf
            run["speedup_bf16_vs_reference"] = r / run["rdevos_bf16_s_per_frame"]
            run["bf16_vs_rdevos_fp32"] = run["rdevos_fp32_s_per_frame"] / run["rdevos_bf16_s_per_frame"]
        runs.append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)
    res["runs"] = runs
    return res


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def _amx() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported())  # type: ignore[attr-defined]
    except AttributeError:
        return False


def _memory_child(impl: str, n: int, short_side: int, precision: str, threads: int) -> None:
    torch.set_num_threads(threads)
    frames, labels = _frames("bear", n, short_side)
    ref, ours = _nets()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if impl == "reference":
        secs = _run_reference(ref, frames, labels, 40, 3)
    else:
        del ref
        secs = _run_ours(ours, frames, labels, InferenceConfig(top_k=40, mem_every=3, resolution=None,
                                                               precision=Precision(precision)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"impl": impl, "frames": n, "peak_rss_mib": peak / 1024, "rss_before_mib": base / 1024,
                      "s_per_frame": secs / n}))


def memory(args: argparse.Namespace) -> dict:
    rows = []
    prec_ours = "bf16" if cpu_has_fast_bf16() else "fp32"
    for impl, prec in (("rdevos", prec_ours), ("reference", "fp32")):
        for n in args.lengths:
            if impl == "reference" and n > args.max_reference:
                continue
            cmd = [sys.executable, __file__, "_child", impl, str(n), str(args.short_side), prec, str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(rows[-1], file=sys.stderr, flush=True)
    return {"short_side": args.short_side, "rows": rows}


def _bench_child(spec: str) -> None:
    """One reference configuration of ``rdevos bench --reference`` (a fresh process; prints the result line)."""
    from rdevos.eval.bench import BenchConfig, BenchRow, MemoryProbe, bench_clip, emit, frame_order

    c = BenchConfig.from_dict(json.loads(spec))
    if c.threads:
        torch.set_num_threads(c.threads)
    net = R.make_reference_net(c.seed)
    with torch.no_grad():
        if c.model is None:
            net.mem_compress.compress_value.weight.mul_(0.3)  # as _nets(): bounded random-weight RDE values
        else:
            from rdevos.hub import load_model

            net.load_state_dict(load_model(c.model, device="cpu", progress=False).state_dict())
    frames, labels = bench_clip(c.resolution, c.objects)
    order = frame_order(len(frames), c.length)
    if c.warmup:
        _run_reference(net, [frames[j] for j in order[:min(c.warmup, c.length)]], labels, c.top_k, c.mem_every)
    probe = MemoryProbe()  # includes the normalised video tensor, which the reference needs whole
    images, mask = torch.stack([R.normalise(frames[j]) for j in order]), R.onehot(labels)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        R.run_reference_core(net, images, mask, top_k=c.top_k, mem_every=c.mem_every)
    secs, cpu_secs = time.perf_counter() - t0, time.process_time() - c0
    h, w = labels.shape
    emit(BenchRow(impl="reference", device="cpu", precision="fp32", resolution=c.resolution, length=c.length,
                  objects=c.objects, height=h, width=w, seconds=secs, s_per_frame=secs / c.length,
                  fps=c.length / secs, cpu_s_per_frame=cpu_secs / c.length, **probe.result(),
                  threads=torch.get_num_threads(), pid=os.getpid()))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_bench_child":
        _bench_child(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--seq", default="bear")
    s.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    s.add_argument("--bf16", action="store_true", default=cpu_has_fast_bf16(),
                   help="also time bf16 (default: only on CPUs with native bf16; ~10x slower without)")
    s.add_argument("--bf16-frames", type=int, default=16)
    s.add_argument("--top-k", type=int, default=20, help="as the ModelScope pipeline (20)")
    s.add_argument("--mem-every", type=int, default=4, help="as the ModelScope pipeline (4)")
    s.add_argument("--repeat", type=int, default=2, help="interleaved repetitions (to see the noise)")
    m = sub.add_parser("memory")
    m.add_argument("--lengths", type=int, nargs="+", default=[50, 1000])
    m.add_argument("--short-side", type=int, default=240)
    m.add_argument("--max-reference", type=int, default=400, help="longest video for the (O(T)) reference")
    m.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = p.parse_args()
    res = speed(args) if args.what == "speed" else memory(args)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
