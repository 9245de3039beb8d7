"""One training loop for every stage: data, optimiser, LR schedule, AMP, checkpoints, exact resume, validation.

Files in ``output_dir``::

    checkpoints/ckpt-<stage index>-<stage>-<iteration>.pt   resumable (model, optimiser, scheduler, scaler, RNG)
    <stage>.pth                                              rdevos-format weights at the end of each stage
    final.pth                                                the last stage's weights (what run_training returns)
    train_config.yaml, metrics.json, logs/scalars.jsonl      (TensorBoard events in logs/ if installed)

Resuming reloads the newest resumable checkpoint and continues bit-identically: every sample is a pure function
of (seed, iteration, rank) (see :class:`~rdevos.train.data.ClipSampler`), and all states are restored.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import re
import signal
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from rdevos.config import InferenceConfig, Precision
from rdevos.device import cpu_has_fast_bf16, resolve_device
from rdevos.errors import CheckpointError, InputError
from rdevos.hub.backbones import load_imagenet_backbone
from rdevos.hub.convert import LoadReport, load_backbone, load_state, load_weights, save_checkpoint
from rdevos.io.atomic import atomic_path, write_text_atomic
from rdevos.model.network import RDEVOS
from rdevos.train.config import SourceKind, StageConfig, TrainConfig, TrainPrecision
from rdevos.train.data import (ClipSampler, CocoPseudoVideoDataset, MixedDataset, StaticPseudoVideoDataset,
                               SyntheticVideoDataset, VOSClipDataset, read_sequence)
from rdevos.train.distributed import (DistInfo, all_reduce_mean, barrier, broadcast_object, init_distributed,
                                      shutdown_distributed, wrap_ddp)
from rdevos.train.losses import bootstrap_fraction
from rdevos.train.model_wrapper import LossWeights, TrainingModel

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "run_training", "load_weights", "load_backbone", "build_stage_dataset", "lr_factor",
           "find_latest_checkpoint", "validate", "LoadReport", "cpu_has_fast_bf16"]

CKPT_FORMAT = "rdevos-train"
CKPT_VERSION = 1
_CKPT_RE = re.compile(r"ckpt-(\d+)-(.+)-(\d+)\.pt$")


# ------------------------------------------------------------------------------------------------ data
def build_stage_dataset(stage: StageConfig, *, seed: int = 0, extra_exclude: Mapping[Path, tuple[str, ...]] = {}
                        ) -> tuple[MixedDataset, list[float]]:
    """Datasets of a stage's sources (with the stage's clip settings) and their sampling weights.

    Args:
        extra_exclude: resolved root -> sequences to exclude too (the validation sequences).
    """
    datasets, weights = [], []
    o = 1 if stage.single_object else stage.max_objects
    for i, src in enumerate(stage.sources):
        root = src.resolved_root()
        exclude = tuple(src.exclude)
        if root is not None:
            exclude += tuple(s for s in extra_exclude.get(root.resolve(), ()) if s not in exclude)
        seqs = src.sequences
        if seqs is None and src.list_file:
            lf = Path(str(src.list_file))
            lf = lf if lf.is_absolute() else (root / lf if root else lf)
            if not lf.is_file():
                raise InputError(f"sequence list {lf} not found")
            seqs = tuple(line.strip() for line in lf.read_text().splitlines() if line.strip())
        if seqs is not None:
            seqs = tuple(s for s in seqs if s not in exclude)
        common: dict[str, Any] = dict(num_frames=stage.num_frames, crop_size=stage.crop_size, max_objects=o,
                                      perturb_iou=stage.perturb_iou)
        blur: dict[str, Any] = dict(motion_blur_prob=stage.motion_blur_prob, motion_blur_max=stage.motion_blur_max)
        if src.kind in (SourceKind.DAVIS, SourceKind.YOUTUBE):
            ds: torch.utils.data.Dataset = VOSClipDataset(
                root, layout=src.kind.value, crop_scale=stage.crop_scale, sequences=seqs, exclude=exclude,
                cache=src.cache, cache_short_side=src.cache_short_side, reverse_prob=stage.reverse_prob,
                copy_paste_prob=src.copy_paste_prob, copy_paste_max=src.copy_paste_max,
                copy_paste_scale=src.copy_paste_scale, check_masks=src.kind is SourceKind.DAVIS, **common, **blur)
        elif src.kind is SourceKind.STATIC:
            ds = StaticPseudoVideoDataset(root, frame_stride=src.frame_stride, sequences=seqs, exclude=exclude,
                                          cache=src.cache, cache_short_side=src.cache_short_side, **common, **blur)
        elif src.kind is SourceKind.COCO:
            ds = CocoPseudoVideoDataset(root, frame_stride=src.frame_stride, sequences=seqs, exclude=exclude,
                                        cache=src.cache, cache_short_side=src.cache_short_side,
                                        min_area=src.min_area, **common, **blur)
        else:
            ds = SyntheticVideoDataset(src.length, seed=seed + 7919 * i, **common)
        datasets.append(ds)
        weights.append(src.weight)
    return MixedDataset(datasets), weights


def _val_exclusions(config: TrainConfig) -> dict[Path, tuple[str, ...]]:
    if not config.val_root or not config.val_sequences:
        return {}
    from rdevos.train.config import expand_path

    return {Path(str(expand_path(config.val_root))).resolve(): tuple(config.val_sequences)}


# ------------------------------------------------------------------------------------------------ schedule
def lr_factor(stage: StageConfig, it: int) -> float:
    """LR multiplier at iteration ``it``: optional linear warm-up, then step decay or cosine."""
    f = 1.0
    if stage.warmup_iterations and it < stage.warmup_iterations:
        f = (it + 1) / stage.warmup_iterations
    if stage.lr_schedule == "step":
        return f * stage.lr_gamma ** sum(1 for s in stage.lr_steps if it >= s)
    span = max(stage.iterations - stage.warmup_iterations, 1)
    progress = min(max(it - stage.warmup_iterations, 0) / span, 1.0)
    return f * (stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _loss_weights(stage: StageConfig, it: int) -> LossWeights:
    return LossWeights(bootstrap_fraction(it, stage.bootstrap_start_warm, stage.bootstrap_end_warm,
                                          stage.bootstrap_top_p),
                       stage.kl_mc, stage.kl_f2, stage.kl_f4, stage.kl_detach_teacher, stage.frame_weighting)


# ------------------------------------------------------------------------------------------------ checkpoints
def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Never a half-written checkpoint (see :mod:`rdevos.io.atomic`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def find_latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """Newest resumable checkpoint (highest stage index, then iteration) in ``output_dir/checkpoints``."""
    d = Path(output_dir) / "checkpoints"
    if not d.is_dir():
        return None
    found = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(3))), p))
    return max(found)[1] if found else None


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ validation
def _shrink_pair(frame: np.ndarray, mask: np.ndarray, short: int | None) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = mask.shape
    if short is None or min(h, w) <= short:
        return frame, mask
    s = short / min(h, w)
    size = (round(w * s), round(h * s))
    return (cv2.resize(frame, size, interpolation=cv2.INTER_AREA),
            cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))


def validate(net: RDEVOS, sequences: Mapping[str, tuple[list[np.ndarray], list[np.ndarray]]], *,
             top_k: int = 20, mem_every: int = 5, precision: Precision = Precision.FP32,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Semi-supervised J&F of ``net`` on held-out sequences with the streaming engine.

    Follows the official DAVIS conventions: objects 1..K with K the largest label of the first GT frame; frames
    1..N-2 are counted; the global numbers are means over objects. Runs on a copy of the network.

    Args:
        sequences: name -> (frames (H, W, 3) uint8, label maps (H, W) uint8), all frames annotated.
    Returns:
        ``{"J&F": .., "J": .., "F": .., "per_sequence": {name: J&F}, "frames": n, "seconds": s}`` (percent).
    """
    from rdevos.eval.metrics import frame_scores
    from rdevos.inference.engine import InferenceEngine

    model = copy.deepcopy(net).float().eval()
    engine = InferenceEngine(model, InferenceConfig(top_k=top_k, mem_every=mem_every, resolution=None,
                                                    precision=precision), device=device)
    j_all, f_all, per_seq = [], [], {}
    t0, n_frames = time.perf_counter(), 0
    for name, (frames, masks) in sequences.items():
        engine.reset()
        k = int(masks[0].max())
        first = masks[0]
        js, fs = [], []
        for t, frame in enumerate(frames):
            prob = engine.step(frame, first if t == 0 else None, is_last=t == len(frames) - 1)
            n_frames += 1
            if 1 <= t <= len(frames) - 2:
                pred = engine.probs_to_labels(prob).cpu().numpy()
                gt = np.where(masks[t] > k, 0, masks[t])
                j, f = frame_scores(gt, pred, k)
                js.append(j)
                fs.append(f)
        if not js:
            continue
        j_obj = np.mean(np.stack(js), axis=0)  # (K,)
        f_obj = np.mean(np.stack(fs), axis=0)
        j_all += list(j_obj)
        f_all += list(f_obj)
        per_seq[name] = float(100 * (j_obj.mean() + f_obj.mean()) / 2)
    if not j_all:
        return {}
    j, f = float(100 * np.mean(j_all)), float(100 * np.mean(f_all))
    return {"J&F": (j + f) / 2, "J": j, "F": f, "per_sequence": per_seq, "frames": n_frames,
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ logging sinks
class _ScalarLog:
    """JSONL scalars (always) and TensorBoard scalars/images (if the ``tensorboard`` package is importable)."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(log_dir / "scalars.jsonl", "a", buffering=1)  # noqa: SIM115 (closed in close())
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(log_dir))
        except Exception:  # tensorboard not installed: JSONL only
            logger.debug("tensorboard not available; logging scalars to %s only", log_dir / "scalars.jsonl")

    def scalars(self, stage: str, step: int, values: Mapping[str, float]) -> None:
        self._jsonl.write(json.dumps({"stage": stage, "it": step, "time": time.time(), **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{stage}/{k}", v, step)

    def images(self, stage: str, step: int, grid: torch.Tensor) -> None:
        if self._tb is not None:
            self._tb.add_image(f"{stage}/clip", grid, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _image_grid(data: Mapping[str, torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """(3, 3*S, T*S) uint8 grid of the first clip: frames, GT object 1, predicted object 1."""
    from rdevos.train.data import IMAGENET_MEAN, IMAGENET_STD

    rgb = data["rgb"][0].detach().float().cpu()
    mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
    std = torch.from_numpy(IMAGENET_STD)[:, None, None]
    rgb = (rgb * std + mean).clamp(0, 1)
    t = rgb.shape[0]
    gt = data["gt"][0, :, 0].detach().float().cpu()
    pred = torch.cat([torch.zeros_like(gt[:1]), masks[0, :, 0].detach().float().cpu()], dim=0)[:t]
    rows = [torch.cat(list(rgb), dim=2), torch.cat([g.expand(3, -1, -1) for g in gt], dim=2),
            torch.cat([p.expand(3, -1, -1) for p in pred], dim=2)]
    return (torch.cat(rows, dim=1) * 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------ trainer
def _resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """The library's device rule (auto: CUDA, then MPS, then CPU); under torchrun CUDA is this rank's GPU."""
    dev = resolve_device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available")
        return torch.device("cuda", info.local_rank if info else (dev.index or 0))
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but Apple MPS is not available")
    return dev


def _resolve_precision(p: TrainPrecision, device: torch.device) -> TrainPrecision:
    if p is TrainPrecision.AUTO:
        if device.type == "cuda":
            return TrainPrecision.FP16
        if cpu_has_fast_bf16():
            return TrainPrecision.BF16
        logger.info("precision auto: this CPU has no native bf16 (AVX512-BF16/AMX), training in fp32")
        return TrainPrecision.FP32
    if p is TrainPrecision.FP16 and device.type != "cuda":
        raise InputError("fp16 AMP needs CUDA; use precision bf16 (or auto) on CPU")
    if p is TrainPrecision.BF16 and device.type == "cpu" and not cpu_has_fast_bf16():
        logger.warning("bf16 autocast on a CPU without native bf16 (AVX512-BF16/AMX) is about 10x slower than fp32; "
                       "consider precision fp32 or auto")
    return p


class _Interrupt:
    """SIGTERM or a first Ctrl-C (SIGINT) sets a flag: the loop finishes the iteration, writes a resumable
    checkpoint and stops. A second Ctrl-C aborts at once. Handlers are installed from the main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("signal %d: stopping after this iteration with a checkpoint (Ctrl-C again to abort)", signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old.clear()


class Trainer:
    """Runs the stages of a :class:`TrainConfig` in order with one loop.

    Args:
        config: the run.
        progress: tqdm bar (rank 0 only).
        info: distributed info (default: a single process).
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True, info: DistInfo | None = None) -> None:
        self.config = config
        self.info = info or DistInfo()
        self.progress = progress
        self.device = _resolve_device(config.device, self.info)
        self.precision = _resolve_precision(config.precision, self.device)
        self.channels_last = config.channels_last and self.device.type == "cpu"
        self.output_dir = Path(str(_expand(config.output_dir) or "."))
        self.metrics: dict[str, Any] = {"stages": {}}
        self._val_data: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] | None = None
        self._log: _ScalarLog | None = None
        self._interrupt = _Interrupt()
        self.stopped_early = False

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    # ----------------------------------------------------------------- setup helpers
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision is TrainPrecision.FP32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision is TrainPrecision.BF16 else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _build_net(self, si: int) -> RDEVOS:
        stage = self.config.stages[si]
        torch.manual_seed(self.config.seed + si)  # same init on every rank (DDP also broadcasts rank 0's)
        net = RDEVOS(self.config.stage_model(stage))
        return net

    def _init_weights(self, net: RDEVOS, si: int) -> None:
        cfg, stage = self.config, self.config.stages[si]
        load, key_init, value_init, init = (_expand(stage.load), _expand(cfg.key_encoder_init),
                                            _expand(cfg.value_encoder_init), _expand(cfg.init))
        if load:
            load_weights(net, load, seed=cfg.seed)
        elif si > 0:
            load_weights(net, self.output_dir / f"{cfg.stages[si - 1].name}.pth", seed=cfg.seed)
        else:
            mc = net.config
            if key_init and mc.key_backbone != "resnet":
                load_imagenet_backbone(net.key_encoder, key_init, mc.key_backbone)
            elif key_init:
                load_backbone(net.key_encoder, key_init, seed=cfg.seed)
            if value_init and mc.value_backbone != "resnet":
                load_imagenet_backbone(net.value_encoder, value_init, mc.value_backbone)
            elif value_init:
                load_backbone(net.value_encoder, value_init, seed=cfg.seed + 1)
            if init:
                load_weights(net, init, seed=cfg.seed)
            if not (key_init or value_init or init):
                logger.info("stage %s starts from random weights", stage.name)

    def _to_device(self, net: RDEVOS) -> RDEVOS:
        net.to(self.device)
        if self.channels_last:
            with torch.no_grad():
                for p in net.parameters():
                    if p.ndim == 4:  # Conv3d weights (the SAM) stay contiguous
                        p.data = p.data.contiguous(memory_format=torch.channels_last)
        return net

    def _pretrained_encoders(self, net: RDEVOS) -> tuple[nn.Module, ...]:
        """The EfficientNet-Lite encoders of ``net`` whose weights come from ImageNet (directly or via a stage)."""
        cfg, mc = self.config, net.config
        out: list[nn.Module] = []
        if mc.key_backbone != "resnet" and cfg.key_encoder_init:
            out.append(net.key_encoder)
        if mc.value_backbone != "resnet" and cfg.value_encoder_init:
            out.append(net.value_encoder.trunk)
        return tuple(out)

    def _freeze(self, net: RDEVOS) -> None:
        """Frozen BatchNorm and frozen leading blocks of the pretrained encoders (see TrainConfig)."""
        cfg = self.config
        pretrained = self._pretrained_encoders(net)
        if cfg.backbone_bn_frozen:
            for mod in pretrained:
                for m in mod.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.requires_grad_(False)
        n = cfg.key_encoder_frozen_blocks
        if n and net.key_encoder in pretrained:
            enc = net.key_encoder
            for m in (enc._conv_stem, enc._bn0, *list(enc._blocks)[:n]):
                m.requires_grad_(False)

    def _optimizer(self, net: RDEVOS, stage: StageConfig) -> torch.optim.Optimizer:
        backbone = {id(p) for mod in self._pretrained_encoders(net) for p in mod.parameters()}
        own = [p for p in net.parameters() if p.requires_grad and id(p) not in backbone]
        pre = [p for p in net.parameters() if p.requires_grad and id(p) in backbone]
        groups: list[dict[str, Any]] = [{"params": own}]
        if pre:
            groups.append({"params": pre, "lr": stage.lr * self.config.backbone_lr_scale})
        if stage.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)
        return torch.optim.Adam(groups, lr=stage.lr, weight_decay=stage.weight_decay)

    def _loader(self, stage: StageConfig, si: int, start: int) -> Iterator[dict[str, Any]]:
        cfg = self.config
        dataset, weights = build_stage_dataset(stage, seed=cfg.seed + 1000 * si, extra_exclude=_val_exclusions(cfg))
        sampler = ClipSampler(dataset.lengths, weights, stage.batch_size, stage.iterations,
                              seed=cfg.seed + 1000 * si, rank=self.info.rank, world_size=self.info.world_size,
                              start=start, max_skip_at=stage.max_skip_at)
        kw: dict[str, Any] = {}
        if cfg.num_workers > 0:
            kw = dict(prefetch_factor=2, persistent_workers=False)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                             pin_memory=self.device.type == "cuda", **kw)
        return iter(loader)

    def _batch_to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    # ----------------------------------------------------------------- checkpoints
    def _ckpt_path(self, si: int, it: int) -> Path:
        return self.output_dir / "checkpoints" / f"ckpt-{si}-{self.config.stages[si].name}-{it:08d}.pt"

    def _save_resumable(self, si: int, it: int, net: RDEVOS, opt: torch.optim.Optimizer,
                        sched: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> Path | None:
        if not self.is_main:
            return None
        path = self._ckpt_path(si, it)
        obj = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "stage_index": si,
               "stage": self.config.stages[si].name, "iteration": it, "world_size": self.info.world_size,
               "model_config": net.config.to_dict(), "model": net.state_dict(), "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
               "config": self.config.to_dict(), "metrics": json.loads(json.dumps(self.metrics))}
        _atomic_torch_save(obj, path)
        ckpts = sorted(p for p in path.parent.iterdir() if _CKPT_RE.match(p.name))
        ckpts.sort(key=lambda p: (int(_CKPT_RE.match(p.name).group(1)), int(_CKPT_RE.match(p.name).group(3))))
        for old in ckpts[:-self.config.keep_last]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        logger.debug("checkpoint %s", path)
        return path

    @staticmethod
    def _read_resumable(path: Path) -> dict[str, Any]:
        from rdevos.hub.convert import read_tensors  # noqa: PLC0415

        obj = read_tensors(path, "training checkpoint")
        if not isinstance(obj, Mapping) or obj.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{path} is not an rdevos training checkpoint (use stages.N.load / init to start "
                                  "from plain weights)")
        if obj.get("version") != CKPT_VERSION:
            raise CheckpointError(f"{path}: training checkpoint version {obj.get('version')} is not supported")
        return dict(obj)

    def _resume_point(self, resume: bool | str) -> tuple[int, int, dict[str, Any] | None]:
        """(stage index, iteration, checkpoint dict or None) to start from."""
        path: Path | None = None
        if isinstance(resume, (str, os.PathLike)):
            path = Path(resume)
            if not path.is_file():
                raise InputError(f"resume checkpoint not found: {path}")
        elif resume:
            path = find_latest_checkpoint(self.output_dir)
        elif find_latest_checkpoint(self.output_dir) is not None:
            raise InputError(f"{self.output_dir} holds checkpoints of an earlier run; resume it (resume=True) or use "
                             "another output_dir")
        if path is None:
            return 0, 0, None
        state = self._read_resumable(path)
        si, it = int(state["stage_index"]), int(state["iteration"])
        if si >= len(self.config.stages) or state["stage"] != self.config.stages[si].name:
            raise CheckpointError(f"{path} belongs to stage {state['stage']!r} (index {si}), which this config does "
                                  f"not have at that index: {[s.name for s in self.config.stages]}")
        if int(state.get("world_size", 1)) != self.info.world_size:
            logger.warning("resuming a %s-process run with %d processes: the data order changes from here on",
                           state.get("world_size"), self.info.world_size)
        if self.is_main:
            logger.info("resuming from %s (stage %s, iteration %d)", path, state["stage"], it)
        self.metrics = dict(state.get("metrics") or self.metrics)
        stage = self.config.stages[si]
        if it >= stage.end and (self.output_dir / f"{stage.name}.pth").is_file():
            # That stage is finished: its weights are in <stage>.pth; go on with the next one.
            return si + 1, 0, None
        # (A checkpoint exactly at the stage end without <stage>.pth, e.g. stop_after set later: the loop runs no
        # iteration and the stage is finished from the checkpoint.)
        return si, it, state

    # ----------------------------------------------------------------- validation
    def _validation_sequences(self) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
        if self._val_data is None:
            cfg = self.config
            root = Path(str(_expand(cfg.val_root)))
            if not root.is_dir():
                raise InputError(f"validation folder not found: {root}")
            data = {}
            for name in cfg.val_sequences:
                frames, masks = read_sequence(root, name, max_frames=cfg.val_max_frames)
                pairs = [_shrink_pair(f, m, cfg.val_resolution) for f, m in zip(frames, masks)]
                data[name] = ([p[0] for p in pairs], [p[1] for p in pairs])
            self._val_data = data
        return self._val_data

    def _validate(self, net: RDEVOS, stage: StageConfig, it: int) -> dict[str, Any] | None:
        cfg = self.config
        if not cfg.val_sequences or net.config.single_object:
            barrier()
            return None
        result = None
        if self.is_main:
            prec = {TrainPrecision.FP32: Precision.FP32, TrainPrecision.BF16: Precision.BF16,
                    TrainPrecision.FP16: Precision.FP16}[self.precision]
            result = validate(net, self._validation_sequences(), top_k=cfg.val_top_k, mem_every=cfg.val_mem_every,
                              precision=prec, device=self.device)
            if result:
                logger.info("validation %s it %d: J&F %.2f (J %.2f, F %.2f) on %d sequences in %.0f s", stage.name,
                            it, result["J&F"], result["J"], result["F"], len(result["per_sequence"]),
                            result["seconds"])
                if self._log:
                    self._log.scalars(stage.name, it, {"val/J&F": result["J&F"], "val/J": result["J"],
                                                       "val/F": result["F"]})
                hist = self.metrics["stages"].setdefault(stage.name, {}).setdefault("validation", [])
                hist.append({"iteration": it, **result})
        barrier()
        return result

    # ----------------------------------------------------------------- main loop
    def run(self, resume: bool | str = True, *, max_iterations: int | None = None) -> Path:
        """Train every remaining stage; returns ``output_dir/final.pth`` (or, when ``max_iterations`` stopped the
        run early, the resumable checkpoint to continue from)."""
        cfg = self.config
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        si0, it0, state = self._resume_point(resume)
        if self.is_main:
            write_text_atomic(self.output_dir / "train_config.yaml", cfg.to_yaml())
            self._log = _ScalarLog(self.output_dir / "logs")
        budget = [max_iterations]
        last: Path | None = None
        try:
            with self._interrupt:
                for si in range(si0, len(cfg.stages)):
                    if budget[0] is not None and budget[0] <= 0 and last is not None:
                        self.stopped_early = True  # the budget ran out exactly at a stage end
                        return find_latest_checkpoint(self.output_dir) or last
                    last = self._run_stage(si, it0 if si == si0 else 0, state if si == si0 else None, budget)
                    if self.stopped_early:
                        return last
        finally:
            if self._log:
                self._log.close()
        final = self.output_dir / "final.pth"
        if self.is_main:
            src = self.output_dir / f"{cfg.stages[-1].name}.pth"
            if si0 >= len(cfg.stages) and not src.is_file():
                raise CheckpointError(f"all stages are finished but {src} is missing")
            net = _load_plain(src)
            save_checkpoint(net, final, extra={"stage": cfg.stages[-1].name, "train_config": cfg.to_dict()})
            self._write_metrics()
            logger.info("training finished: %s", final)
        barrier()
        return final

    def _write_metrics(self) -> None:
        write_text_atomic(self.output_dir / "metrics.json", json.dumps(self.metrics, indent=2, default=float) + "\n")

    def _run_stage(self, si: int, start: int, state: dict[str, Any] | None, budget: list[int | None]) -> Path:
        cfg, stage = self.config, self.config.stages[si]
        net = self._build_net(si)
        if state is not None:
            net.load_state_dict(state["model"], strict=True)
        else:
            self._init_weights(net, si)
        self._to_device(net)
        self._freeze(net)
        frozen_bn = self._pretrained_encoders(net) if self.config.backbone_bn_frozen else ()
        wrapper = TrainingModel(net, bn_train=self.config.bn_train, channels_last=self.channels_last,
                                frozen_bn=frozen_bn)
        model = wrap_ddp(wrapper, self.device, self.info)
        opt = self._optimizer(net, stage)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it, _s=stage: lr_factor(_s, it))
        scaler = torch.amp.GradScaler(self.device.type if self.device.type == "cuda" else "cpu",
                                      enabled=self.precision is TrainPrecision.FP16)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
        if self.is_main:
            n_params = sum(p.numel() for p in net.parameters())
            logger.info("stage %s: %d iterations from %d, batch %d x %d process(es), %s, %s on %s, %.2f M params",
                        stage.name, stage.end, start, stage.batch_size, self.info.world_size,
                        "single-object" if stage.single_object else "multi-object", self.precision.value,
                        self.device, n_params / 1e6)
        stage_metrics = self.metrics["stages"].setdefault(stage.name, {})
        data_iter = self._loader(stage, si, start)
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=stage.end, initial=start, desc=stage.name, dynamic_ncols=True, unit="it")
        sums: dict[str, float] = defaultdict(float)
        n_sum, t_data, t_start = 0, 0.0, time.perf_counter()
        clips_done = 0
        model.train()
        it = start
        try:
            while it < stage.end:
                t0 = time.perf_counter()
                batch = self._batch_to_device(next(data_iter))
                t_data += time.perf_counter() - t0
                weights = _loss_weights(stage, it)
                with self._autocast():
                    out = model(batch, weights)
                loss = out["total_loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"stage {stage.name} iteration {it}: loss is {loss.item()}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if stage.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), stage.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                it += 1
                clips_done += stage.batch_size * self.info.world_size
                for k, v in out.items():
                    if isinstance(v, torch.Tensor) and v.ndim == 0:
                        sums[k] += float(v.detach())
                n_sum += 1
                if bar is not None:
                    bar.update(1)
                if it % cfg.log_every == 0 or it == stage.end:
                    self._log_scalars(stage, it, sums, n_sum, weights, opt, t_data, t_start, clips_done, bar)
                    if self.is_main and cfg.image_every and it % cfg.image_every == 0 and self._log:
                        self._log.images(stage.name, it, _image_grid(batch, out["masks"]))
                    sums.clear()
                    n_sum = 0
                del out, loss, batch
                if it % cfg.checkpoint_every == 0 or it == stage.end:
                    self._save_resumable(si, it, net, opt, sched, scaler)
                if cfg.val_every and it % cfg.val_every == 0 and it < stage.end:
                    tv = time.perf_counter()
                    self._validate(net, stage, it)
                    t_start += time.perf_counter() - tv  # throughput numbers exclude validation
                if budget[0] is not None:
                    budget[0] -= 1
                stop = self._interrupt.requested or (budget[0] is not None and budget[0] <= 0)
                stop = bool(broadcast_object(stop))
                if stop and it < stage.end:
                    path = self._save_resumable(si, it, net, opt, sched, scaler) if it % cfg.checkpoint_every else \
                        self._ckpt_path(si, it)
                    self.stopped_early = True
                    if self.is_main:
                        self._write_metrics()
                        logger.info("stopped at %s iteration %d; resume from %s", stage.name, it, path)
                    barrier()
                    return path or self._ckpt_path(si, it)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t_start
        stage_metrics.update({"iterations": stage.end, "training_seconds_this_run": elapsed,
                              "clips_per_second": clips_done / max(elapsed, 1e-9)})
        result = self._validate(net, stage, it)
        final = self.output_dir / f"{stage.name}.pth"
        if self.is_main:
            save_checkpoint(net, final, extra={"stage": stage.name, "iteration": it,
                                               "validation": json.loads(json.dumps(result)) if result else None})
            stage_metrics["checkpoint"] = str(final)
            self._write_metrics()
            logger.info("stage %s done: %s", stage.name, final)
        barrier()
        return final

    def _log_scalars(self, stage: StageConfig, it: int, sums: Mapping[str, float], n: int, weights: LossWeights,
                     opt: torch.optim.Optimizer, t_data: float, t_start: float, clips: int, bar: Any) -> None:
        avg = {k: v / max(n, 1) for k, v in sums.items()}
        avg = all_reduce_mean(avg, self.device)
        if not self.is_main:
            return
        elapsed = time.perf_counter() - t_start
        scalars = {**{f"loss/{k}": v for k, v in avg.items()}, "lr": opt.param_groups[0]["lr"],
                   "bootstrap_p": weights.bootstrap_p, "clips_per_s": clips / max(elapsed, 1e-9),
                   "data_fraction": t_data / max(elapsed, 1e-9)}
        if self._log:
            self._log.scalars(stage.name, it, scalars)
        self.metrics["stages"].setdefault(stage.name, {})["last_loss"] = avg.get("total_loss")
        if bar is not None:
            bar.set_postfix(loss=f"{avg.get('total_loss', float('nan')):.4f}", lr=f"{scalars['lr']:.2e}",
                            refresh=False)
        logger.info("%s it %d: loss %.4f (ce %.4f) lr %.2e, %.2f clips/s", stage.name, it,
                    avg.get("total_loss", float("nan")), avg.get("ce", float("nan")), scalars["lr"],
                    scalars["clips_per_s"])


def _expand(p: str | None) -> str | None:
    """Expand environment variables; an empty result (e.g. ``${RDEVOS_RESNET50:-}`` unset) means None."""
    from rdevos.train.config import expand_path

    return expand_path(p) or None


def _load_plain(path: Path) -> RDEVOS:
    from rdevos.hub.convert import load_network

    return load_network(path)


# ------------------------------------------------------------------------------------------------ entry
def _default_threads(info: DistInfo) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(info.local_world_size, 1))


def run_training(config: TrainConfig, *, resume: bool | str = True, progress: bool = True,
                 max_iterations: int | None = None) -> Path:
    """Train all stages of ``config`` (single process or under ``torchrun``) and return the final checkpoint.

    Args:
        config: the run (see :class:`TrainConfig`; ``TrainConfig.from_yaml`` reads the presets in ``configs/``).
        resume: True continues from the newest checkpoint in ``output_dir`` (if any); a path resumes from that
            training checkpoint; False starts fresh (refused if ``output_dir`` already holds checkpoints).
        progress: show a tqdm bar (rank 0).
        max_iterations: stop (with a resumable checkpoint) after this many iterations in this call, e.g. for
            time-boxed jobs; then the resumable checkpoint's path is returned instead.
    Returns:
        ``output_dir/final.pth`` in the rdevos format (loads with ``rdevos.load_model``).
    """
    device = _resolve_device(config.device)
    info = init_distributed(device.type)
    try:
        if device.type == "cpu":
            torch.set_num_threads(config.threads or _default_threads(info))
        elif config.threads:
            torch.set_num_threads(config.threads)
        trainer = Trainer(config, progress=progress, info=info)
        return trainer.run(resume, max_iterations=max_iterations)
    finally:
        shutdown_distributed(info)
