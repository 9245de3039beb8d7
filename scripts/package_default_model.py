"""Score a trained checkpoint on the held-out sequences and write it as the embedded default model.

    python scripts/package_default_model.py runs/lite-davis/final.pth                 # score at 288 and 480, write
    python scripts/package_default_model.py CKPT --resolutions 288 --no-write          # score only

Writes ``rdevos/assets/weights/rdevos_lite.pt`` (rdevos format, inference defaults inside: the best-scoring
resolution) and prints its sha256 for ``rdevos/hub/registry.py``. The held-out sequences are never trained on
(``configs/lite-davis.yaml`` excludes them); numbers come from the official-exact evaluator.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from rdevos import InferenceConfig, load_model, save_checkpoint
from rdevos.eval import evaluate_davis
from rdevos.eval.runners import find_layout, run_dataset
from rdevos.hub.download import sha256_file

HELD_OUT = ["boat", "dog-agility", "hike", "motorbike", "tennis"]
REPO = Path(__file__).resolve().parents[1]


def score(model: torch.nn.Module, root: Path, config: InferenceConfig, work: Path) -> dict[str, float]:
    summary = run_dataset(root, work, dataset="davis2016", split="train", model=model, config=config,
                          sequences=HELD_OUT, progress=False)
    g = evaluate_davis(find_layout(root, "davis2016", "train").annotations, work, HELD_OUT,
                       processes=1).global_metrics
    return {"J&F": 100 * g["J&F-Mean"], "J": 100 * g["J-Mean"], "F": 100 * g["F-Mean"], "frames": summary.frames,
            "fps": summary.fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--root", type=Path,
                    default=Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data" / "davis2016-train")
    ap.add_argument("--resolutions", default="288,480", help="short sides to score; the best becomes the default")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--mem-every", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "rdevos" / "assets" / "weights" / "rdevos_lite.pt")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("RDEVOS_THREADS", "1")))

    model = load_model(args.checkpoint)
    results: dict[int, dict[str, float]] = {}
    for r in (int(x) for x in args.resolutions.split(",")):
        cfg = InferenceConfig.preset("davis2016").replace(resolution=r, top_k=args.top_k, mem_every=args.mem_every)
        with tempfile.TemporaryDirectory() as work:
            results[r] = score(model, args.root, cfg, Path(work) / "pred")
        print(f"resolution {r}: J&F {results[r]['J&F']:.1f} (J {results[r]['J']:.1f}, F {results[r]['F']:.1f}), "
              f"{results[r]['fps']:.2f} frames/s", flush=True)
    best = max(results, key=lambda k: results[k]["J&F"])
    report = {"held_out": HELD_OUT, "top_k": args.top_k, "mem_every": args.mem_every,
              "results": {str(k): v for k, v in results.items()}, "default_resolution": best}
    print(json.dumps(report, indent=2))
    if args.no_write:
        return
    inference = {"resolution": best, "top_k": args.top_k, "mem_every": args.mem_every}
    extra = {"source": Path(args.checkpoint).name, "held_out": HELD_OUT,
             "held_out_jf": {str(k): round(v["J&F"], 2) for k, v in results.items()}}
    save_checkpoint(model, args.out, inference=inference, extra=extra)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB), sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
