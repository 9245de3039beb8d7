"""CPU allocator tuning (``rdevos.device.tune_cpu_allocator``) on and off: s/frame and peak RSS, interleaved runs.

The tuning is process-wide, so each run is a fresh process (``RDEVOS_MALLOC_TUNING=0`` for "off"); on and off
alternate so that machine load hits both alike. Reports the median ratio off/on per configuration.

    python benchmarks/bench_allocator.py                      # embedded model bf16+fp32, official bf16; 480p
    python benchmarks/bench_allocator.py --configs rdevos-lite2:bf16 --repeat 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time, torch
from rdevos import InferenceConfig, load_model
from rdevos.device import tune_cpu_allocator
from rdevos.eval.bench import bench_clip, random_model, _proc_status_mib
from rdevos.inference.engine import InferenceEngine
model_name, precision, frames_n, threads, res = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = random_model(0) if model_name == "official" else load_model(model_name, progress=False)
frames, mask = bench_clip(res, 2)
eng = InferenceEngine(model, InferenceConfig(top_k=20, mem_every=4, precision=precision, resolution=None), device="cpu")
with torch.inference_mode():
    eng.step(frames[0], mask); eng.step(frames[1])
    t = time.process_time()
    for i in range(frames_n):
        eng.probs_to_labels(eng.step(frames[(2 + i) % len(frames)]))
    s = (time.process_time() - t) / frames_n
print(json.dumps({"s_per_frame": s, "peak_rss_mib": _proc_status_mib("VmHWM"), "tuned": tune_cpu_allocator()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="rdevos-lite2:bf16,rdevos-lite2:fp32,official:bf16",
                    help="MODEL:PRECISION list; MODEL 'official' = official architecture, random weights")
    ap.add_argument("--frames", type=int, default=8, help="timed frames per run (after 2 warm-up frames)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=480)
    ap.add_argument("-o", "--output", help="write the runs as JSON")
    args = ap.parse_args()
    rows = []
    for cfg in args.configs.split(","):
        model, precision = cfg.split(":")
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        for _ in range(args.repeat):
            for mode in ("on", "off"):
                env = dict(os.environ, RDEVOS_MALLOC_TUNING="1" if mode == "on" else "0")
                out = subprocess.run([sys.executable, "-c", _CHILD, model, precision, str(args.frames),
                                      str(args.threads), str(args.resolution)],
                                     capture_output=True, text=True, env=env, check=True)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        on = [r["s_per_frame"] for r in runs["on"]]
        off = [r["s_per_frame"] for r in runs["off"]]
        ratios = [b / a for a, b in zip(on, off)]
        row = {"model": model, "precision": precision, "on_s": on, "off_s": off, "speedup_median": statistics.median(ratios),
               "peak_rss_on_mib": max(r["peak_rss_mib"] for r in runs["on"]),
               "peak_rss_off_mib": max(r["peak_rss_mib"] for r in runs["off"]),
               "tuned": all(r["tuned"] for r in runs["on"])}
        rows.append(row)
        print(f"{model:14s} {precision}: on {statistics.median(on):.3f} s/frame, off {statistics.median(off):.3f}; "
              f"off/on {row['speedup_median']:.2f}x (runs {', '.join(f'{r:.2f}' for r in ratios)}); peak RSS "
              f"on {row['peak_rss_on_mib']:.0f} / off {row['peak_rss_off_mib']:.0f} MiB", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"threads": args.threads, "resolution": args.resolution, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
