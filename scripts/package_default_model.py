"""Score a trained checkpoint (and baselines) on the held-out sequences; write it as the embedded default model.

    python scripts/package_default_model.py runs/lite3-davis/lite3.pth                   # score, then write the asset
    python scripts/package_default_model.py CKPT --resolutions 384,480 --no-write        # score only
    python scripts/package_default_model.py CKPT --baselines --precisions fp32,bf16 --report held_out.json

The held-out sequences are the training config's ``val_sequences`` (never trained on: the trainer excludes them
from every source of the same root). Numbers come from the official-exact DAVIS evaluator; the report holds the
global and the per-sequence J&F of every method so that spreads, not one number, can be quoted.

Writes ``rdevos/assets/weights/<name>.pt`` (rdevos format; inference defaults inside: the best-scoring
resolution) and prints its sha256 for ``rdevos/hub/registry.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdevos import InferenceConfig, load_model, save_checkpoint
from rdevos.eval import evaluate_davis
from rdevos.eval.runners import find_layout, run_dataset
from rdevos.hub.download import sha256_file
from rdevos.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("package_default_model")


def score(root: Path, work: Path, sequences: list[str], *, model: torch.nn.Module | None = None,
          method: str = "model", config: InferenceConfig | None = None) -> dict[str, Any]:
    """Run ``method`` on ``sequences`` and evaluate: global J&F/J/F, per-sequence J&F, frames/s (all percent)."""
    summary = run_dataset(root, work, dataset="davis2016", split="train", model=model, method=method, config=config,
                          sequences=sequences, progress=False)
    res = evaluate_davis(find_layout(root, "davis2016", "train").annotations, work, sequences, processes=1)
    g = res.global_metrics
    per_seq = {o.sequence: 100 * (o.j_mean + o.f_mean) / 2 for o in res.objects}
    vals = np.array(list(per_seq.values()))
    return {"J&F": 100 * g["J&F-Mean"], "J": 100 * g["J-Mean"], "F": 100 * g["F-Mean"], "per_sequence": per_seq,
            "per_sequence_std": float(vals.std()), "per_sequence_min": float(vals.min()),
            "frames": summary.frames, "fps": summary.fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "lite3-davis.yaml",
                    help="training config whose val_sequences are the held-out set")
    ap.add_argument("--root", type=Path,
                    default=Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data" / "davis2016-train")
    ap.add_argument("--resolutions", default="480", help="short sides to score; the best becomes the default")
    ap.add_argument("--precisions", default="fp32", help="e.g. fp32,bf16 (the first is the reference)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--mem-every", type=int, default=5)
    ap.add_argument("--baselines", action="store_true", help="also score copy-first-mask and DIS optical flow")
    ap.add_argument("--compare", nargs="*", default=[], help="other checkpoints to score on the same sequences")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--out", type=Path, default=REPO / "rdevos" / "assets" / "weights" / "rdevos_lite3.pt")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(int(os.environ.get("RDEVOS_THREADS", str(os.cpu_count() or 1))))
    held_out = list(TrainConfig.from_yaml(args.config, [f"val_root={args.root}"]).val_sequences)

    report: dict[str, Any] = {"held_out": held_out, "top_k": args.top_k, "mem_every": args.mem_every,
                              "results": {}}

    def run(label: str, **kw: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as work:
            r = score(args.root, Path(work) / "pred", held_out, **kw)
        report["results"][label] = r
        logger.info("%s: J&F %.1f (J %.1f, F %.1f; per-sequence std %.1f, min %.1f), %.2f frames/s", label,
                    r["J&F"], r["J"], r["F"], r["per_sequence_std"], r["per_sequence_min"], r["fps"])
        return r

    if args.baselines:
        run("copy-first-mask", method="copy-first-mask")
        run("flow", method="flow")
    model = load_model(args.checkpoint)
    base = InferenceConfig.preset("davis2016").replace(top_k=args.top_k, mem_every=args.mem_every)
    precisions = args.precisions.split(",")
    best, best_jf = None, -1.0
    for r in (int(x) for x in args.resolutions.split(",")):
        for p in precisions:
            res = run(f"model@{r}/{p}", model=model, config=base.replace(resolution=r, precision=p))
            if p == precisions[0] and res["J&F"] > best_jf:
                best, best_jf = r, res["J&F"]
    for other in args.compare:
        om = load_model(other)
        r = om.inference_defaults.get("resolution", best)
        run(f"{Path(other).name}@{r}", model=om, config=base.replace(resolution=r))
    report["default_resolution"] = best
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v["J&F"] for k, v in report["results"].items()}, indent=2))
    if args.no_write:
        return
    inference = {"resolution": best, "top_k": args.top_k, "mem_every": args.mem_every}
    extra = {"source": Path(args.checkpoint).name, "held_out": held_out,
             "held_out_jf": {k: round(v["J&F"], 2) for k, v in report["results"].items()}}
    save_checkpoint(model, args.out, inference=inference, extra=extra)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB), sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
