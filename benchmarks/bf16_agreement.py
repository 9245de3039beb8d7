"""bf16 against fp32 with the embedded model on DAVIS sequences: J&F change and label agreement per sequence.

    python benchmarks/bf16_agreement.py --root ../shared/data/davis2016-train --strides 8,0 -o bf16_agreement.json

Each sequence runs in fp32 and in bf16 for every ``fp32_stride`` (``InferenceConfig.fp32_stride``: the key encoder's
stages up to that output stride stay fp32), first mask only, top-k 20, memory every 5th frame, short side 480, as
the model card's held-out evaluation. J and F (``rdevos.eval.metrics``, the official DAVIS measures) are averaged over
frames 1..N-2 as the DAVIS evaluation does; agreement is the share of equal label pixels over all frames.
Needs a CPU with native bf16 (AMX or AVX512-BF16) to be quick; elsewhere bf16 is emulated (slow, same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rdevos import InferenceConfig, load_model
from rdevos.eval.metrics import db_eval_boundary, db_eval_iou
from rdevos.inference.engine import InferenceEngine

REPO = Path(__file__).resolve().parents[1]


def _load(root: Path, seq: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "JPEGImages" / seq).glob("*.jpg"))]
    gts = [(np.asarray(Image.open(p)) > 0).astype(np.uint8)
           for p in sorted((root / "Annotations" / seq).glob("*.png"))]
    return frames, gts


def _run(model: torch.nn.Module, config: InferenceConfig, frames: list[np.ndarray], first: np.ndarray
         ) -> tuple[np.ndarray, float]:
    eng = InferenceEngine(model, config, device="cpu")
    out = []
    t = time.process_time()
    with torch.inference_mode():
        for i, f in enumerate(frames):
            p = eng.step(f, first if i == 0 else None, is_last=i == len(frames) - 1)
            out.append(eng.probs_to_labels(p).numpy().astype(np.uint8))
    return np.stack(out), (time.process_time() - t) / len(frames)


def _jf(pred: np.ndarray, gts: list[np.ndarray]) -> float:
    idx = range(1, len(gts) - 1)
    j = np.mean([db_eval_iou(gts[i], pred[i] > 0) for i in idx])
    f = np.mean([db_eval_boundary(pred[i] > 0, gts[i]) for i in idx])
    return float(100 * (j + f) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path,
                    default=Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data" / "davis2016-train")
    ap.add_argument("--sequences", help="comma-separated (default: all under ROOT/JPEGImages)")
    ap.add_argument("--model", default="rdevos-lite2")
    ap.add_argument("--strides", default="8,0", help="fp32_stride values of the bf16 runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, progress=False)
    seqs = args.sequences.split(",") if args.sequences else sorted(p.name for p in (args.root / "JPEGImages").iterdir())
    base = InferenceConfig.preset("davis2016").replace(top_k=20, mem_every=5, resolution=480)
    strides = [int(s) for s in args.strides.split(",")]
    report: dict[str, dict[str, dict[str, float]]] = {f"fp32_stride_{s}": {} for s in strides}
    for seq in seqs:
        frames, gts = _load(args.root, seq)
        ref, ref_s = _run(model, base.replace(precision="fp32"), frames, gts[0])
        ref_jf = _jf(ref, gts)
        for s in strides:
            pred, sec = _run(model, base.replace(precision="bf16", fp32_stride=s), frames, gts[0])
            jf = _jf(pred, gts)
            report[f"fp32_stride_{s}"][seq] = {"jf": jf, "d": jf - ref_jf, "agree": float((pred == ref).mean()),
                                               "s": sec, "fp32_s": ref_s}
            print(f"{seq:18s} fp32_stride {s:2d}: J&F {jf:6.2f} (fp32 {ref_jf:6.2f}, change {jf - ref_jf:+.2f}), "
                  f"labels equal {100 * (pred == ref).mean():.3f} %", flush=True)
    for name, r in report.items():
        d = np.array([x["d"] for x in r.values()])
        a = np.array([x["agree"] for x in r.values()])
        print(f"{name}: mean J&F change {d.mean():+.3f}, median |change| {np.median(np.abs(d)):.2f}, "
              f"max |change| {np.abs(d).max():.2f}; labels equal mean {100 * a.mean():.3f} %, min {100 * a.min():.3f} %")
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
