"""Held-out J&F of a model under several inference settings, single- and multi-object, per sequence and object.

    python scripts/heldout_eval.py --model rdevos-lite2 --sets davis,mo,coco --settings 480:20:5 384:20:5 \
        --report /work/scratch/i23-model/eval-lite2.json

Sets: ``davis`` = the 8 held-out DAVIS-2016 train sequences (the config's ``val_sequences``), ``mo`` = the
multi-object video clips and ``coco`` = the static coco clips of scripts/make_multi_object_check.py (``--mo-root``).
A setting is ``resolution:top_k:mem_every`` with optional flags after a slash: ``/flip`` (horizontal-flip
test-time averaging: a second engine on the mirrored video, probabilities averaged) and ``/bf16``.

Every prediction is scored with the official-exact DAVIS evaluator (:func:`rdevos.eval.evaluate_davis`): the
numbers are means over objects (J&F, J, F), with per-sequence means (over the sequence's objects) and per-object
values, the per-sequence standard deviation and minimum, and CPU seconds per frame of the segmentation loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdevos import InferenceConfig, load_model
from rdevos.eval import evaluate_davis
from rdevos.inference.engine import InferenceEngine
from rdevos.io.atomic import write_text_atomic
from rdevos.io.masks import write_mask
from rdevos.train import TrainConfig
from rdevos.train.data import read_sequence

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("heldout_eval")


def load_any(name: str) -> torch.nn.Module:
    """A registry name, a weights file, or a resumable training checkpoint (``rdevos train``'s checkpoints/)."""
    path = Path(name)
    if path.is_file():
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and obj.get("format") == "rdevos-train":
            from rdevos.config import ModelConfig
            from rdevos.model.network import RDEVOS

            net = RDEVOS(ModelConfig.from_dict(dict(obj["model_config"])))
            net.load_state_dict(obj["model"], strict=True)
            return net.eval()
    return load_model(name)


def parse_setting(text: str) -> tuple[InferenceConfig, bool]:
    """``res:k:mem[/flip][/bf16]`` -> (config, flip)."""
    base, *flags = text.split("/")
    res, k, mem = base.split(":")
    unknown = set(flags) - {"flip", "bf16"}
    if unknown:
        raise SystemExit(f"unknown setting flag(s) {sorted(unknown)} in {text!r}")
    cfg = InferenceConfig(resolution=None if res == "native" else int(res), top_k=int(k), mem_every=int(mem),
                          precision="bf16" if "bf16" in flags else "fp32")
    return cfg, "flip" in flags


def segment(model: torch.nn.Module, frames: list[np.ndarray], first: np.ndarray, config: InferenceConfig,
            flip: bool) -> list[np.ndarray]:
    """Label maps of every frame (first-frame mask given), optionally averaged with the mirrored video."""
    eng = InferenceEngine(model, config, device="cpu")
    eng_f = InferenceEngine(model, config, device="cpu") if flip else None
    out = []
    n = len(frames)
    for t, frame in enumerate(frames):
        mask = first if t == 0 else None
        prob = eng.step(frame, mask, is_last=t == n - 1)
        if eng_f is not None:
            pf = eng_f.step(np.ascontiguousarray(frame[:, ::-1]),
                            None if mask is None else np.ascontiguousarray(mask[:, ::-1]), is_last=t == n - 1)
            prob = (prob + pf.flip(-1)) / 2
        out.append(eng.probs_to_labels(prob).cpu().numpy().astype(np.uint8))
    return out


def score_set(model: torch.nn.Module, data: dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
              config: InferenceConfig, flip: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp) / "gt", Path(tmp) / "pred"
        seconds, frames_done = 0.0, 0
        for name, (frames, masks) in data.items():
            first = masks[0]
            t0 = time.process_time()
            labels = segment(model, frames, first, config, flip)
            seconds += time.process_time() - t0
            frames_done += len(frames)
            for t, (lab, gt) in enumerate(zip(labels, masks)):
                write_mask(pred_dir / name / f"{t:05d}.png", lab)
                write_mask(gt_dir / name / f"{t:05d}.png", gt)
        res = evaluate_davis(gt_dir, pred_dir, list(data), processes=1)
    g = res.global_metrics
    per_obj = {f"{o.sequence}/{o.object_id}": 100 * (o.j_mean + o.f_mean) / 2 for o in res.objects}
    per_seq: dict[str, list[float]] = {}
    for o in res.objects:
        per_seq.setdefault(o.sequence, []).append(100 * (o.j_mean + o.f_mean) / 2)
    seq_means = {k: float(np.mean(v)) for k, v in per_seq.items()}
    vals = np.array(list(seq_means.values()))
    return {"J&F": 100 * g["J&F-Mean"], "J": 100 * g["J-Mean"], "F": 100 * g["F-Mean"],
            "per_sequence": seq_means, "per_object": per_obj, "per_sequence_std": float(vals.std()),
            "per_sequence_min": float(vals.min()), "per_sequence_max": float(vals.max()), "frames": frames_done,
            "cpu_s_per_frame": seconds / max(frames_done, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True, help="checkpoints or registry names")
    ap.add_argument("--sets", default="davis,mo,coco")
    ap.add_argument("--settings", nargs="+", default=["480:20:5"])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "lite3-davis.yaml")
    shared = Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data"
    ap.add_argument("--davis-root", type=Path, default=shared / "davis2016-train")
    ap.add_argument("--mo-root", type=Path, default=Path("/work/scratch/i23-model/mo-check"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", type=Path, required=True, help="JSON report (updated after every run)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    held = list(TrainConfig.from_yaml(args.config, [f"val_root={args.davis_root}"]).val_sequences)
    sets: dict[str, dict[str, tuple[list[np.ndarray], list[np.ndarray]]]] = {}
    for s in args.sets.split(","):
        if s == "davis":
            sets[s] = {n: read_sequence(args.davis_root, n) for n in held}
        elif s in ("mo", "coco"):
            names = sorted(p.name for p in (args.mo_root / "JPEGImages").iterdir() if p.name.startswith(s + "-"))
            sets[s] = {n: read_sequence(args.mo_root, n) for n in names}
        else:
            raise SystemExit(f"unknown set {s!r} (davis, mo, coco)")
    report: dict[str, Any] = json.loads(args.report.read_text()) if args.report.is_file() else {}
    for m in args.model:
        model = load_any(m)
        for setting in args.settings:
            config, flip = parse_setting(setting)
            for sname, data in sets.items():
                key = f"{m}|{setting}|{sname}"
                if key in report:
                    logger.info("%s: done before (J&F %.1f)", key, report[key]["J&F"])
                    continue
                r = score_set(model, data, config, flip)
                report[key] = r
                write_text_atomic(args.report, json.dumps(report, indent=1) + "\n")
                logger.info("%s: J&F %.1f (J %.1f, F %.1f), per-sequence std %.1f, min %.1f, %.3f CPU s/frame", key,
                            r["J&F"], r["J"], r["F"], r["per_sequence_std"], r["per_sequence_min"],
                            r["cpu_s_per_frame"])


if __name__ == "__main__":
    main()
