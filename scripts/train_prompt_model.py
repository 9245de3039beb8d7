"""Train (and evaluate) the prompt-to-mask model on DAVIS-2016 train frames.

    python scripts/train_prompt_model.py --out /tmp/runs/prompt-heldout             # train on 22, eval on the 8
    python scripts/train_prompt_model.py --out /tmp/runs/prompt-all --all --no-eval  # the shipped recipe on all 30
    python scripts/train_prompt_model.py --eval-only CKPT --report docs/held_out_prompt.json
    python scripts/train_prompt_model.py --package CKPT                               # the package asset

The held-out sequences are the VOS model's (``val_sequences`` of configs/lite2-davis.yaml).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import yaml

from rdevos.prompt import PromptPredictor, load_prompt_model
from rdevos.prompt.training import PromptTrainConfig, evaluate, load_frames, train_prompt_net, with_distractors

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("RDEVOS_DAVIS", str(ROOT.parent / "shared/data/davis2016-train")))
    ap.add_argument("--config", default=str(ROOT / "configs/lite2-davis.yaml"), help="gives the held-out sequences")
    ap.add_argument("--out", default="/tmp/runs/prompt")
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--train-trunk-from", type=int, default=None,
                    help="first Lite2 block to fine-tune (default: the stride-16 blocks)")
    ap.add_argument("--init", metavar="CKPT", help="start from this prompt model (fine-tuning)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--all", action="store_true", help="train on all sequences (the shipped model)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--eval-only", metavar="CKPT")
    ap.add_argument("--eval-every", type=int, default=5, help="evaluate every n-th frame of the held-out sequences")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", help="write the evaluation as JSON here")
    ap.add_argument("--package", metavar="CKPT",
                    help="write CKPT (fp16 weights) as the embedded model asset and print its sha256")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    held = list(yaml.safe_load(Path(args.config).read_text())["val_sequences"])
    seqs = sorted(p.name for p in (Path(args.data) / "Annotations").iterdir() if p.is_dir() and p.name != "480p")
    train_seqs = seqs if args.all else [s for s in seqs if s not in held]
    if args.package:
        from rdevos.hub.download import sha256_file  # noqa: PLC0415
        from rdevos.prompt import save_prompt_model  # noqa: PLC0415

        asset = ROOT / "rdevos/assets/weights/rdevos_prompt_lite2.pt"
        save_prompt_model(load_prompt_model(args.package), asset, half=True,
                          meta={"trained_on": "all" if args.all else "train minus held-out", "source": args.package})
        print(f"wrote {asset} ({asset.stat().st_size / 2**20:.1f} MiB), sha256 {sha256_file(asset)}")
        return
    if args.eval_only:
        net = load_prompt_model(args.eval_only)
    else:
        samples = load_frames(args.data, train_seqs)
        logging.info("%d training samples from %d sequences", len(samples), len(train_seqs))
        cfg = PromptTrainConfig(iterations=args.iterations, batch_size=args.batch_size, threads=args.threads,
                                lr=args.lr)
        from rdevos.prompt.model import PromptNet  # noqa: PLC0415

        probe = PromptNet(cfg.model).trunk
        cfg.train_trunk_from = probe.f8_index + 1 if args.train_trunk_from is None else args.train_trunk_from
        net = train_prompt_net(samples, cfg, args.out,
                               init=load_prompt_model(args.init).train() if args.init else None)
    if args.no_eval:
        return
    ev = load_frames(args.data, held, every=args.eval_every)
    res = evaluate(PromptPredictor(net, precision=args.precision), ev)
    logging.info("held-out IoU (%d frames): %s", res.count, json.dumps({k: round(v, 4) for k, v in res.mean.items()}))
    for seq, d in sorted(res.per_sequence.items()):
        logging.info("  %-18s %s", seq, " ".join(f"{k}={v:.3f}" for k, v in d.items()))
    # the same frames with a second object pasted in: does the prompt pick its own object?
    dis = evaluate(PromptPredictor(net, precision=args.precision), with_distractors(ev))
    logging.info("with a pasted distractor: %s", json.dumps({k: round(v, 4) for k, v in dis.mean.items()}))
    if args.report:
        Path(args.report).write_text(json.dumps({"held_out": held, "frames": res.count, "every": args.eval_every,
                                                 "precision": args.precision, "mean": res.mean,
                                                 "per_sequence": res.per_sequence,
                                                 "seconds_per_prompt": res.seconds_per_prompt,
                                                 "with_distractor": {"mean": dis.mean,
                                                                     "per_sequence": dis.per_sequence}},
                                                indent=1) + "\n")


if __name__ == "__main__":
    main()
