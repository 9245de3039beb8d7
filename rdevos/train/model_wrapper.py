"""Training forward pass (rdevos-spec 6.6): unrolls a clip with an STM teacher bank and a SAM/RDE student bank.

Multi-object clips of T >= 3 frames (the reference uses T = 5):

* frame 0: memory values from the **perturbed** first-frame masks (``pgt``); the clean values are computed only
  for the mask-consistency loss L_MC = KL(V(F0, pgt) -> V(F0, gt));
* odd frames t: segmented from the STM bank (all previous frames) and supervised;
* even frames t >= 2: segmented from the single RDE (the SAM bank folds every frame not yet folded, one
  ``compress_memory`` per frame: RDE(0,1) at t = 2, then +2, +3 at t = 4) and supervised; the STM bank's readout
  of that frame is the teacher of L_UG = KL(SAM readout -> STM readout) per object; the STM prediction (not the
  SAM one) gives the frame's memory value;
* the value of every frame comes from the soft (aggregated) STM-side prediction.

Single-object (stage-0) clips: every frame t >= 1 is segmented from the STM bank; the loss is CE + L_MC.

Training reads memory with a full softmax (max subtracted, no top-k) as the reference's training network.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.model.memory_read import affinity
from rdevos.model.network import RDEVOS, soft_aggregate_logits
from rdevos.train.losses import FrameWeighting, kl_div_mean, segmentation_loss

__all__ = ["TrainingModel", "LossWeights", "full_softmax_read"]


class LossWeights(NamedTuple):
    """Loss settings of one iteration (see :class:`~rdevos.train.config.StageConfig`)."""

    bootstrap_p: float = 1.0
    kl_mc: float = 10.0
    kl_f2: float = 10.0
    kl_f4: float = 10.0
    detach_teacher: bool = False
    frame_weighting: str = FrameWeighting.HALVING.value


def full_softmax_read(mem_key: torch.Tensor, mem_value: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Memory read of the training network: L2 affinity, softmax over all memory entries (max subtracted).

    Args:
        mem_key: (B, Ck, T, h, w); mem_value: (B, O, Cv, T, h, w); query_key: (B, Ck, h, w).
    Returns:
        (B, O, Cv, h, w) readout, in the dtype of ``mem_value``.
    """
    b, o, cv = mem_value.shape[:3]
    h, w = query_key.shape[-2:]
    aff = affinity(mem_key.flatten(2), query_key.flatten(2))  # (B, N, M) fp32
    weights = F.softmax(aff, dim=1)  # F.softmax subtracts the max internally
    mv = mem_value.reshape(b, o * cv, -1)
    out = torch.bmm(mv, weights.to(mv.dtype))  # under autocast the GEMM runs in low precision, as the reference
    return out.reshape(b, o, cv, h, w)


class TrainingModel(nn.Module):
    """Wraps an :class:`RDEVOS` network for training (this is what DDP wraps).

    Args:
        net: the network (its attribute ``net`` keeps the official key names for saving).
        bn_train: run BatchNorm in train mode. The reference keeps the **whole network in eval mode** during
            training (BN uses and keeps its running statistics; the affine BN weights still learn); default False.
        channels_last: feed 4-D activations in channels_last layout (the caller converts the weights).
        frozen_bn: modules whose BatchNorm layers stay in eval mode even with ``bn_train`` (pretrained encoders).
    """

    def __init__(self, net: RDEVOS, *, bn_train: bool = False, channels_last: bool = False,
                 frozen_bn: tuple[nn.Module, ...] = ()) -> None:
        super().__init__()
        self.net = net
        self.bn_train = bn_train
        self._frozen_bn = [m for mod in frozen_bn for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
        self.channels_last = channels_last
        self.train()

    def train(self, mode: bool = True) -> TrainingModel:
        super().train(mode)
        if not self.bn_train:
            self.net.eval()
        for m in self._frozen_bn:  # pretrained encoders keep their ImageNet statistics
            m.eval()
        return self

    # --------------------------------------------------------------------- pieces
    def _decode(self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """readout (B, O, Cv, h, w) -> (decoder input (B, O, 2Cv, h, w), logits (B, O, H, W))."""
        b, o = readout.shape[:2]
        x = torch.cat([readout, f16_thin.unsqueeze(1).expand(-1, o, -1, -1, -1).to(readout.dtype)], dim=2)
        flat = x.flatten(0, 1)
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        logits = self.net.decoder(flat, f8.repeat_interleave(o, 0), f4.repeat_interleave(o, 0))
        return x, logits.reshape(b, o, *logits.shape[-2:])

    @staticmethod
    def _aggregate(logits: torch.Tensor, selector: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Object logits (B, O, H, W) -> aggregated logits (B, O+1, H, W) and object probabilities (B, O, H, W)."""
        prob = torch.sigmoid(logits.float())
        if selector is not None:
            prob = prob * selector[:, :, None, None]
        agg = soft_aggregate_logits(prob, dim=1)
        return agg, F.softmax(agg, dim=1)[:, 1:]

    def _value(self, image: torch.Tensor, f16: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, O, Cv, h, w) values of the frames ``image`` with soft masks (B, O, H, W)."""
        if self.channels_last:
            masks = masks.contiguous(memory_format=torch.channels_last)
        return self.net.encode_value(image, f16, masks.to(image.dtype))

    # --------------------------------------------------------------------- forward
    def forward(self, data: dict[str, torch.Tensor], weights: LossWeights) -> dict[str, Any]:
        """Unroll one batch of clips and compute the losses.

        Args:
            data: ``rgb`` (B, T, 3, H, W) normalised; ``gt`` (B, T, O, H, W) in [0, 1]; ``pgt`` (B, O, H, W)
                perturbed frame-0 masks; ``cls_gt`` (B, T, H, W) int64; ``selector`` (B, O).
            weights: loss settings for this iteration.
        Returns:
            dict with ``total_loss`` (scalar), the loss parts (``ce``, ``ce_<t>``, ``kl_mc``, ``kl_ug_<t>``) and
            ``logits`` (list over frames 1..T-1 of (B, O+1, H, W)), ``masks`` (B, T-1, O, H, W) probabilities.
        """
        rgb = data["rgb"]
        b, t = rgb.shape[:2]
        single = self.net.config.single_object
        selector = None if single else data["selector"]
        frames = rgb.flatten(0, 1)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        feats = self.net.encode_key(frames)

        def per_frame(x: torch.Tensor, i: int) -> torch.Tensor:
            return x.unflatten(0, (b, t))[:, i]

        keys = [per_frame(feats.key, i) for i in range(t)]
        f16 = [per_frame(feats.f16, i) for i in range(t)]
        thin = [per_frame(feats.f16_thin, i) for i in range(t)]
        f8 = [per_frame(feats.f8, i) for i in range(t)]
        f4 = [per_frame(feats.f4, i) for i in range(t)]
        img = [per_frame(frames, i) for i in range(t)]

        gt0 = data["gt"][:, 0]
        ref_v = self._value(img[0], f16[0], data["pgt"])  # memory: perturbed masks
        clean_v = self._value(img[0], f16[0], gt0)  # L_MC target

        out: dict[str, Any] = {}
        losses: dict[str, torch.Tensor] = {}
        kl_mc = sum(kl_div_mean(ref_v[:, o], clean_v[:, o], detach_teacher=weights.detach_teacher)
                    for o in range(ref_v.shape[1]))
        losses["kl_mc"] = kl_mc

        stm_k = [keys[0]]
        stm_v = [ref_v]
        rde: tuple[torch.Tensor, torch.Tensor] | None = None
        folded = 0  # frames folded into the RDE so far (frame 0 is the initial state)
        logits_list: list[torch.Tensor] = []
        masks_list: list[torch.Tensor] = []
        kl_ug: dict[int, torch.Tensor] = {}
        for i in range(1, t):
            mk = torch.stack(stm_k, dim=2)
            mv = torch.stack(stm_v, dim=3)
            stm_read = full_softmax_read(mk, mv, keys[i])
            use_sam = not single and i % 2 == 0
            if use_sam:
                # Fold frames folded+1 .. i-1 into the RDE, one SAM step each.
                if rde is None:
                    rde = (stm_k[0].unsqueeze(2), stm_v[0].unsqueeze(3))
                while folded < i - 1:
                    folded += 1
                    k2 = torch.cat([rde[0], stm_k[folded].unsqueeze(2)], dim=2)
                    v2 = torch.cat([rde[1], stm_v[folded].unsqueeze(3)], dim=3)
                    rde = self.net.compress_memory(k2, v2)
                sam_read = full_softmax_read(rde[0], rde[1], keys[i])
                sam_x, sam_logits = self._decode(sam_read, thin[i], f8[i], f4[i])
                agg, _ = self._aggregate(sam_logits, selector)
                logits_list.append(agg)
                if i < t - 1:  # the last frame's STM decode would only feed a value nobody reads
                    stm_x, stm_logits = self._decode(stm_read, thin[i], f8[i], f4[i])
                    _, prob = self._aggregate(stm_logits, selector)
                    masks_list.append(prob)
                else:
                    stm_x = torch.cat([stm_read, thin[i].unsqueeze(1).expand(-1, stm_read.shape[1], -1, -1, -1)
                                       .to(stm_read.dtype)], dim=2)
                    masks_list.append(F.softmax(agg, dim=1)[:, 1:])
                kl_ug[i] = sum(kl_div_mean(sam_x[:, o], stm_x[:, o], detach_teacher=weights.detach_teacher)
                               for o in range(sam_x.shape[1]))
            else:
                _, stm_logits = self._decode(stm_read, thin[i], f8[i], f4[i])
                agg, prob = self._aggregate(stm_logits, selector)
                logits_list.append(agg)
                masks_list.append(prob)
            if i < t - 1:
                stm_k.append(keys[i])
                stm_v.append(self._value(img[i], f16[i], masks_list[-1]))

        ce, per_frame_ce = segmentation_loss(logits_list, data["cls_gt"], selector, weights.bootstrap_p,
                                             weights.frame_weighting)
        total = ce + weights.kl_mc * kl_mc
        for i, v in kl_ug.items():
            total = total + (weights.kl_f2 if i == 2 else weights.kl_f4) * v
            losses[f"kl_ug_{i}"] = v
        losses["ce"] = ce
        for i, v in enumerate(per_frame_ce, start=1):
            losses[f"ce_{i}"] = v
        losses["total_loss"] = total
        out.update(losses)
        out["logits"] = logits_list
        out["masks"] = torch.stack(masks_list, dim=1)
        return out
