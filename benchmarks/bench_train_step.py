"""Training throughput (clips/s) of a training config's network: fp32 vs bf16 autocast, frozen vs unfrozen blocks.

    python benchmarks/bench_train_step.py --config configs/lite3-davis.yaml --iters 4 --threads 2 \
        --variants fp32:15,bf16:15,fp32:11,bf16:11

Each variant ``precision:frozen_blocks`` builds the stage-0 network with the config's weights (``init``), the
trainer's freezing rules and optimiser, and times ``--iters`` optimiser steps (after one warm-up step) on real
clips of the config's first source (drawn once, reused, so data loading is not counted). On a CPU shared with
other jobs only ratios measured in the same run mean anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from rdevos.train import TrainConfig
from rdevos.train.model_wrapper import TrainingModel
from rdevos.train.trainer import Trainer, _loss_weights, build_stage_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--override", nargs="*", default=[])
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="fp32:15,bf16:15,fp32:11,bf16:11")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cfg = TrainConfig.from_yaml(args.config, args.override)
    stage = cfg.stages[0]
    ds, _ = build_stage_dataset(stage, seed=cfg.seed)
    samples = [ds[(i * 7919) % len(ds)] for i in range(stage.batch_size)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "info"}
    results = {}
    for v in args.variants.split(","):
        prec, frozen = v.split(":")
        c = dataclasses.replace(cfg, precision=prec, key_encoder_frozen_blocks=int(frozen))
        tr = Trainer(c, progress=False)
        net = tr._build_net(0)
        tr._init_weights(net, 0)
        tr._to_device(net)
        tr._freeze(net)
        wrapper = TrainingModel(net, bn_train=c.bn_train, channels_last=tr.channels_last,
                                frozen_bn=tr._pretrained_encoders(net))
        opt = tr._optimizer(net, stage)
        times = []
        for i in range(args.iters + 1):
            t0 = time.perf_counter()
            with tr._autocast():
                out = wrapper(batch, _loss_weights(stage, 1000))
            opt.zero_grad(set_to_none=True)
            out["total_loss"].backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        s = sorted(times)[len(times) // 2]
        results[v] = {"s_per_iter_median": s, "clips_per_s": stage.batch_size / s, "all": times}
        print(f"{v}: {s:.2f} s/iter (median of {len(times)}), {stage.batch_size / s:.2f} clips/s", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
