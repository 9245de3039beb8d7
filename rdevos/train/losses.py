"""Training losses: bootstrapped cross-entropy with warm-up, the reference's per-frame weighting, KL terms.

Reference behaviour reproduced by default (rdevos-spec sections 6.7 and 8):

* bootstrapped CE: plain CE before ``start_warm``; then the mean of the top-p fraction of per-pixel losses of
  each sample, p going linearly from 1 to ``top_p`` between ``start_warm`` and ``end_warm``;
* frames are combined with ``total = (total + l_i) / 2`` inside the frame loop, i.e. l1/16 + l2/8 + l3/4 + l4/2
  for 5-frame clips (``FrameWeighting.HALVING``); ``MEAN`` is the plain average;
* KL: ``nn.KLDivLoss()`` with the default 'mean' reduction (mean over *all* elements), log-softmax / softmax over
  the channel axis, and the teacher **not** detached (gradients flow into both sides) unless ``detach_teacher``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["FrameWeighting", "bootstrap_fraction", "bootstrapped_ce", "frame_weights", "combine_frames",
           "kl_div_mean", "segmentation_loss"]


class FrameWeighting(str, enum.Enum):
    HALVING = "halving"  #: the reference: total = (total + l_i) / 2 per frame
    MEAN = "mean"  #: plain mean over supervised frames


def bootstrap_fraction(it: int, start_warm: int, end_warm: int, top_p: float = 0.15) -> float:
    """Fraction of the hardest pixels kept at iteration ``it`` (1.0 = plain CE).

    1 before ``start_warm``; ``top_p + (1 - top_p) * (end_warm - it) / (end_warm - start_warm)`` in between;
    ``top_p`` after ``end_warm``.
    """
    if it < start_warm:
        return 1.0
    if it > end_warm or end_warm == start_warm:
        return float(top_p)
    return float(top_p + (1 - top_p) * ((end_warm - it) / (end_warm - start_warm)))


def bootstrapped_ce(logits: torch.Tensor, target: torch.Tensor, p: float) -> torch.Tensor:
    """Cross-entropy of one sample, averaged over its hardest ``p`` fraction of pixels.

    Args:
        logits: (1, C, H, W) or (C, H, W) class logits (any float dtype; computed in fp32).
        target: (1, H, W) or (H, W) int64 class indices < C.
        p: kept fraction; 1.0 is plain CE.
    Returns:
        scalar float32 tensor.
    """
    if logits.ndim == 3:
        logits, target = logits[None], target[None]
    raw = F.cross_entropy(logits.float(), target, reduction="none")
    if p >= 1.0:
        return raw.mean()
    raw = raw.flatten()
    k = max(int(raw.numel() * p), 1)
    return torch.topk(raw, k, sorted=False).values.mean()


def frame_weights(num_frames: int, weighting: FrameWeighting | str = FrameWeighting.HALVING) -> list[float]:
    """Weights of the supervised frames 1..num_frames-1 (halving: ..., 1/8, 1/4, 1/2; mean: 1/(T-1) each)."""
    n = num_frames - 1
    if FrameWeighting(weighting) is FrameWeighting.MEAN:
        return [1.0 / n] * n
    return [0.5 ** (n - i) for i in range(n)]


def combine_frames(losses: Sequence[torch.Tensor], weighting: FrameWeighting | str = FrameWeighting.HALVING
                   ) -> torch.Tensor:
    """Combine per-frame losses l_1..l_n as the reference does (halving) or by their mean."""
    if FrameWeighting(weighting) is FrameWeighting.MEAN:
        return torch.stack(list(losses)).mean()
    total = losses[0].new_zeros(())
    for loss in losses:
        total = (total + loss) / 2  # the reference's loop (OFF:model/losses.py:84); STCN sums instead
    return total


def kl_div_mean(student: torch.Tensor, teacher: torch.Tensor, *, detach_teacher: bool = False) -> torch.Tensor:
    """``nn.KLDivLoss()(log_softmax(student, 1), softmax(teacher, 1))`` with the default 'mean' reduction.

    The mean runs over every element (not 'batchmean'), as in the reference. Computed in fp32. Zero-probability
    targets contribute 0 (``xlogy``), like ``F.kl_div``.

    Args:
        student, teacher: (N, C, ...) feature maps; the softmax runs over C.
        detach_teacher: stop gradients into the teacher (the reference does not).
    """
    if detach_teacher:
        teacher = teacher.detach()
    log_q = F.log_softmax(student.float(), dim=1)
    log_p = F.log_softmax(teacher.float(), dim=1)
    p = log_p.exp()
    # p * (log p - log q), written with log_softmax for the target so it is finite where p underflows.
    return (p * (log_p - log_q)).mean()


def segmentation_loss(logits: Sequence[torch.Tensor], cls_gt: torch.Tensor, selector: torch.Tensor | None, p: float,
                      weighting: FrameWeighting | str = FrameWeighting.HALVING
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Bootstrapped CE over the supervised frames, per sample, averaged over the batch per frame.

    Samples whose second object is absent (``selector[:, 1] == 0``) use only the [bg, obj1] channels, as the
    reference does.

    Args:
        logits: per supervised frame i = 1..n, (B, O+1, H, W) aggregated logits.
        cls_gt: (B, T, H, W) int64 labels in 0..O with T = n + 1 (frame 0 is not supervised).
        selector: (B, O) 1 where the object exists (None: all exist).
        p: bootstrap fraction (see :func:`bootstrap_fraction`).
    Returns:
        (combined loss, per-frame losses).
    """
    per_frame = []
    b = cls_gt.shape[0]
    for i, lg in enumerate(logits, start=1):
        acc = lg.new_zeros((), dtype=torch.float32)
        if lg.shape[1] == 2 or selector is None:
            if p >= 1.0:  # one fused call: the mean of per-sample means equals the full mean (same H, W)
                acc = F.cross_entropy(lg.float(), cls_gt[:, i])
            else:
                acc = sum(bootstrapped_ce(lg[j], cls_gt[j, i], p) for j in range(b)) / b
        else:
            for j in range(b):
                c = lg.shape[1] if selector[j, 1] > 0.5 else 2
                acc = acc + bootstrapped_ce(lg[j, :c], cls_gt[j, i], p) / b
        per_frame.append(acc)
    return combine_frames(per_frame, weighting), per_frame
