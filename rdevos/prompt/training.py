"""Training and evaluation of the prompt-to-mask network on annotated frames (DAVIS layout).

Training samples are (frame, object) pairs. Each gets a prompt like a user's: a ground-truth box with a little
jitter, or clicks only; then, as in RITM, up to ``max_sim_clicks`` corrective clicks are simulated with the current
network (no gradient; the trunk features are computed once) before the loss is taken on the final prediction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from rdevos.prompt.clicks import first_click, iou, next_click
from rdevos.prompt.encoding import Box, Point, mask_box, prompt_window, render_prompts, warp_image, warp_mask
from rdevos.prompt.model import PromptConfig, PromptNet
from rdevos.prompt.predictor import PromptPredictor, grabcut_mask

__all__ = ["Sample", "load_frames", "PromptTrainConfig", "train_prompt_net", "evaluate", "EvalResult", "with_distractors"]

logger = logging.getLogger(__name__)
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


@dataclass
class Sample:
    """One annotated object on one frame."""

    sequence: str
    frame: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool


def load_frames(root: str | Path, sequences: Sequence[str], every: int = 1, min_area: int = 100) -> list[Sample]:
    """Frames of DAVIS-layout sequences (``Annotations[/480p]/SEQ/*.png`` beside ``JPEGImages[/480p]/SEQ/*.jpg``),
    one sample per object id, every ``every``-th frame."""
    root = Path(root)
    res = "480p" if (root / "Annotations" / "480p").is_dir() else ""
    out: list[Sample] = []
    for seq in sequences:
        ann_dir = root / "Annotations" / res / seq
        for i, ann in enumerate(sorted(ann_dir.glob("*.png"))):
            if i % every:
                continue
            labels = np.array(Image.open(ann))
            if labels.ndim == 3:
                labels = labels[..., 0]
            ids = [v for v in np.unique(labels) if v != 0]
            if not ids:
                continue
            image = np.array(Image.open(root / "JPEGImages" / res / seq / (ann.stem + ".jpg")).convert("RGB"))
            for v in ids:
                m = labels == v
                if m.sum() >= min_area:
                    out.append(Sample(seq, int(ann.stem), image, m))
    return out


@dataclass
class PromptTrainConfig:
    iterations: int = 1500
    batch_size: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-4
    trunk_lr_scale: float = 0.1
    train_trunk_from: int | None = None  # first trunk block to train (None: trunk frozen)
    p_box: float = 0.7  # else clicks only
    max_sim_clicks: int = 3
    p_sim: float = 0.6
    p_paste: float = 0.5  # paste another sample's object into the frame (the target is then either one)
    seed: int = 0
    bf16: bool = True
    threads: int = 2
    model: PromptConfig = field(default_factory=PromptConfig)


def _jitter_box(rng: np.random.Generator, box: Box, h: int, w: int) -> Box:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if rng.random() < 0.5:
        return box  # tight, as from a ground-truth box
    s = 0.03 if rng.random() < 0.8 else 0.1
    d = rng.normal(0, s, 4) * np.array([bw, bh, bw, bh])
    if rng.random() < 0.2:
        d = np.abs(d) * np.array([-1, -1, 1, 1])  # loose box, all sides out
    nx0, ny0, nx1, ny1 = x0 + d[0], y0 + d[1], x1 + d[2], y1 + d[3]
    nx0, ny0 = float(np.clip(nx0, 0, w - 2)), float(np.clip(ny0, 0, h - 2))
    nx1, ny1 = float(np.clip(nx1, nx0 + 2, w)), float(np.clip(ny1, ny0 + 2, h))
    return nx0, ny0, nx1, ny1


def _random_clicks(rng: np.random.Generator, mask: np.ndarray) -> list[Point]:
    """1-3 positive clicks inside the object (the first at its interior), sometimes a negative one outside."""
    pts: list[Point] = []
    fc = first_click(mask)
    if fc is not None:
        pts.append(fc)
    ys, xs = np.nonzero(mask)
    for _ in range(int(rng.integers(0, 3))):
        j = int(rng.integers(len(xs)))
        pts.append((float(xs[j]), float(ys[j]), True))
    if rng.random() < 0.3:
        bys, bxs = np.nonzero(~mask)
        if len(bxs):
            j = int(rng.integers(len(bxs)))
            pts.append((float(bxs[j]), float(bys[j]), False))
    return pts


def _paste(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
           donor: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Copy-paste augmentation: ``donor``'s object, rescaled, pasted at a random place (over the target at times).

    DAVIS-2016 frames hold one salient object each, so without this a network learns "segment the salient object"
    and ignores where the user clicked. Returns the new image and the target: the pasted object or what remains
    visible of the original one (half each; the pasted one when too little of the original is left).
    """
    import cv2  # noqa: PLC0415

    h, w = mask.shape
    box = mask_box(donor.mask)
    assert box is not None
    x0, y0, x1, y1 = (int(v) for v in box)
    obj, omask = donor.image[y0:y1, x0:x1], donor.mask[y0:y1, x0:x1].astype(np.uint8)
    scale = float(np.sqrt(max(mask.sum(), 400) / max(omask.sum(), 1))) * float(rng.uniform(0.4, 1.2))
    scale = min(scale, 0.9 * w / obj.shape[1], 0.9 * h / obj.shape[0])
    ow, oh = max(int(obj.shape[1] * scale), 8), max(int(obj.shape[0] * scale), 8)
    obj = cv2.resize(np.ascontiguousarray(obj), (ow, oh), interpolation=cv2.INTER_LINEAR)
    omask = cv2.resize(omask, (ow, oh), interpolation=cv2.INTER_NEAREST).astype(bool)
    if rng.random() < 0.5:
        obj, omask = obj[:, ::-1], omask[:, ::-1]
    px, py = int(rng.integers(0, w - ow + 1)), int(rng.integers(0, h - oh + 1))
    pasted = np.zeros_like(mask)
    pasted[py:py + oh, px:px + ow] = omask
    out = image.copy()
    out[py:py + oh, px:px + ow][omask] = obj[omask]
    rest = mask & ~pasted
    if pasted.sum() >= 100 and (rng.random() < 0.5 or rest.sum() < 0.3 * mask.sum() or rest.sum() < 100):
        return out, pasted
    return out, rest


class _Batch:
    """Crops, ground truth and prompts of one batch, with what click simulation needs to add clicks."""

    def __init__(self, rng: np.random.Generator, samples: list[Sample], cfg: PromptTrainConfig,
                 donors: Sequence[Sample] = ()) -> None:
        size = cfg.model.crop_size
        crops, gts, self.prompts, self.windows, self.boxes, self.points, self.valid = [], [], [], [], [], [], []
        for s in samples:
            image, mask = s.image, s.mask
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if donors and rng.random() < cfg.p_paste:
                image, mask = _paste(rng, image, mask, donors[int(rng.integers(len(donors)))])
            h, w = mask.shape
            tight = mask_box(mask)
            assert tight is not None
            context = float(rng.uniform(0.15, 0.4))
            if rng.random() < cfg.p_box:
                box: Box | None = _jitter_box(rng, tight, h, w)
                pts: list[Point] = []
                window = prompt_window(h, w, box, pts, None, context)
            else:
                box = None
                pts = _random_clicks(rng, mask)
                window = prompt_window(h, w, tight if rng.random() < 0.5 else None, (), None, context)
            crop = warp_image(np.ascontiguousarray(image), window, size).astype(np.float32)
            crop = crop * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # contrast / brightness
            crops.append(crop)
            gts.append(warp_mask(mask, window, size) > 0.5)
            self.valid.append(warp_mask(np.ones_like(mask), window, size) > 0.5)
            self.windows.append(window)
            self.boxes.append(box)
            self.points.append(pts)
        self.size = size
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        self.images = ((x - _MEAN) / _STD).contiguous()
        self.gt = np.stack(gts)
        self.gt_t = torch.from_numpy(self.gt).float()[:, None]
        self.prev: list[np.ndarray | None] = [None] * len(samples)
        # clicks are kept in crop pixel coordinates from here on (the window is the identity for rendering)
        self.crop_points: list[list[Point]] = [[self._to_crop(w, p) for p in pts]
                                               for w, pts in zip(self.windows, self.points)]
        self.crop_boxes: list[Box | None] = [None if b is None else (*w.to_crop(b[0], b[1], size),
                                                                    *w.to_crop(b[2], b[3], size))
                                             for w, b in zip(self.windows, self.boxes)]

    def _to_crop(self, window: object, p: Point) -> Point:
        cx, cy = window.to_crop(p[0] + 0.5, p[1] + 0.5, self.size)  # type: ignore[attr-defined]
        return cx - 0.5, cy - 0.5, p[2]

    def prompt_tensor(self) -> torch.Tensor:
        from rdevos.prompt.encoding import Window  # noqa: PLC0415

        ident = Window(0.0, 0.0, float(self.size), float(self.size))
        maps = [render_prompts(ident, self.size, b, [(min(max(x, 0), self.size - 1), min(max(y, 0), self.size - 1),
                                                      pos) for x, y, pos in pts], prev)
                for b, pts, prev in zip(self.crop_boxes, self.crop_points, self.prev)]
        return torch.from_numpy(np.stack(maps))

    def add_clicks(self, probs: np.ndarray, which: np.ndarray) -> None:
        for i in np.nonzero(which)[0]:
            pred = probs[i] > 0.5
            click = next_click(pred, self.gt[i], ignore=~self.valid[i])
            if click is not None:
                self.crop_points[i].append(click)
            self.prev[i] = pred.astype(np.float32)


def _loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, gt)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * gt).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + gt.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def train_prompt_net(samples: list[Sample], cfg: PromptTrainConfig, out: str | Path, *,
                     init: PromptNet | None = None, imagenet: bool = True,
                     on_checkpoint: Callable[[PromptNet, int], None] | None = None) -> PromptNet:
    """Train a :class:`PromptNet` on ``samples``; writes ``out/last.pt`` every 50 iterations and at the end."""
    from rdevos.hub.backbones import load_imagenet_backbone  # noqa: PLC0415
    from rdevos.prompt.predictor import save_prompt_model  # noqa: PLC0415

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    net = init if init is not None else PromptNet(cfg.model)
    if init is None and imagenet:
        load_imagenet_backbone(net.trunk, "imagenet", cfg.model.backbone)
    trunk_params = []
    for i, block in enumerate(net.trunk._blocks):
        train = cfg.train_trunk_from is not None and i >= cfg.train_trunk_from
        for p in block.parameters():
            p.requires_grad_(train)
            if train:
                trunk_params.append(p)
    for p in [*net.trunk._conv_stem.parameters(), *net.trunk._bn0.parameters()]:
        p.requires_grad_(False)
    head = [p for n, p in net.named_parameters() if not n.startswith("trunk.")]
    groups = [{"params": head, "lr": cfg.lr}]
    if trunk_params:
        groups.append({"params": trunk_params, "lr": cfg.lr * cfg.trunk_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = cfg.train_trunk_from if cfg.train_trunk_from is not None else len(net.trunk._blocks)
    net.train()
    net.trunk.eval()  # BN statistics of the pretrained trunk stay frozen
    t0, run = time.time(), 0.0
    bar = tqdm(range(cfg.iterations), desc="prompt training", unit="it")
    for it in bar:
        lr_f = min(1.0, (it + 1) / 100) * 0.5 * (1 + math.cos(math.pi * it / cfg.iterations))
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * lr_f
        batch = _Batch(rng, [samples[int(j)] for j in rng.integers(len(samples), size=cfg.batch_size)], cfg, samples)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            with torch.no_grad():
                x = F.relu6(net.trunk._conv_stem(net.trunk._stem_input(batch.images), net.trunk._bn0))
                f4 = f8 = x
                for i in range(split):
                    x = net.trunk._blocks[i](x)
                    if i == net.trunk.f4_index:
                        f4 = x
                    elif i == net.trunk.f8_index:
                        f8 = x
            for i in range(split, net.trunk.f16_index + 1):
                x = net.trunk._blocks[i](x)
                if i == net.trunk.f4_index:
                    f4 = x
                elif i == net.trunk.f8_index:
                    f8 = x
            feats = (x, f8, f4)
            sim = rng.random(cfg.batch_size) < cfg.p_sim
            n_sim = int(rng.integers(1, cfg.max_sim_clicks + 1)) if sim.any() else 0
            if n_sim:
                with torch.no_grad():
                    net.eval()
                    dfeats = tuple(f.detach() for f in feats)
                    for _ in range(n_sim):
                        probs = torch.sigmoid(net.decode(dfeats, batch.prompt_tensor()).float())[:, 0].numpy()
                        batch.add_clicks(probs, sim)
                    net.train()
                    net.trunk.eval()
            logits = net.decode(feats, batch.prompt_tensor())
        loss = _loss(logits.float(), batch.gt_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if it == 0 else 0.98 * run + 0.02 * loss.item()
        bar.set_postfix(loss=f"{run:.3f}")
        if (it + 1) % 50 == 0:
            logger.info("it %d loss %.4f (%.2f s/it)", it + 1, run, (time.time() - t0) / (it + 1))
        if (it + 1) % 50 == 0 or it + 1 == cfg.iterations:
            net.eval()
            save_prompt_model(net, out / "last.pt", meta={"iteration": it + 1})
            if on_checkpoint is not None:
                on_checkpoint(net, it + 1)
            net.train()
            net.trunk.eval()
    return net.eval()


def with_distractors(samples: Sequence[Sample], seed: int = 0) -> list[Sample]:
    """Each sample with another sample's object pasted in (a second salient object; the target is either one):
    an evaluation of whether a prompt selects *its* object rather than the most salient one."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        others = [d for d in samples if d.sequence != s.sequence] or list(samples)
        image, mask = _paste(rng, s.image, s.mask, others[int(rng.integers(len(others)))])
        out.append(Sample(s.sequence, s.frame, image, mask))
    return out


@dataclass
class EvalResult:
    """Mean IoU per prompt kind over the evaluated samples, plus per-sequence means."""

    mean: dict[str, float]
    per_sequence: dict[str, dict[str, float]]
    count: int
    seconds_per_prompt: float


def evaluate(predictor: PromptPredictor | None, samples: list[Sample], clicks: Sequence[int] = (1, 3, 5),
             grabcut: bool = True) -> EvalResult:
    """IoU from the ground-truth box (``box``), after ``k`` simulated corrective clicks on top of it (``box+kc``),
    from clicks only (``clicks-kc``: the first at the object's interior, then corrective), and the baselines: the
    box itself (``box-only``) and GrabCut from the box (``grabcut``)."""
    scores: dict[str, list[float]] = {}
    seqs: dict[str, dict[str, list[float]]] = {}
    spent, n_pred = 0.0, 0

    def add(kind: str, s: Sample, v: float) -> None:
        scores.setdefault(kind, []).append(v)
        seqs.setdefault(s.sequence, {}).setdefault(kind, []).append(v)

    for s in tqdm(samples, desc="prompt eval", unit="frame"):
        box = mask_box(s.mask)
        assert box is not None
        boxmask = np.zeros_like(s.mask)
        boxmask[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
        add("box-only", s, iou(boxmask, s.mask))
        if grabcut:
            add("grabcut", s, iou(grabcut_mask(s.image, box), s.mask))
        if predictor is None:
            continue
        for start in ("box", "clicks"):
            pts: list[Point] = [] if start == "box" else [first_click(s.mask)]  # type: ignore[list-item]
            b = box if start == "box" else None
            prev = None
            for k in range(max(clicks) + 1):
                t = time.time()
                probs = predictor.predict_probs(s.image, b, pts, prev)
                spent += time.time() - t
                n_pred += 1
                pred = probs > 0.5
                n_clicks = len(pts)
                if start == "box" and k == 0:
                    add("box", s, iou(pred, s.mask))
                elif start == "box" and n_clicks in clicks:
                    add(f"box+{n_clicks}c", s, iou(pred, s.mask))
                elif start == "clicks" and n_clicks in clicks:
                    add(f"clicks-{n_clicks}c", s, iou(pred, s.mask))
                if n_clicks >= max(clicks):
                    break
                c = next_click(pred, s.mask)
                if c is None:
                    c = pts[-1] if pts else first_click(s.mask)  # perfect already: repeat (scores stay)
                pts.append(c)  # type: ignore[arg-type]
                prev = pred
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    per = {q: {k: float(np.mean(v)) for k, v in d.items()} for q, d in seqs.items()}
    return EvalResult(mean, per, len(samples), spent / max(n_pred, 1))
