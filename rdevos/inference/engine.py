"""Streaming inference engine: one frame per :meth:`InferenceEngine.step`, memory constant in video length."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from rdevos.config import InferenceConfig, Precision
from rdevos.device import resolve_device, tune_cpu_allocator
from rdevos.errors import InputError
from rdevos.inference.bookkeeping import channel_order, mask_object_ids, memory_due
from rdevos.inference.memory import MemoryBank
from rdevos.inference.objects import ObjectManager
from rdevos.inference.preprocess import (normalize, pad_divide_by, resize_image, resize_labels, resized_size,
                                         to_image_tensor, unpad)
from rdevos.model.fastpath import cached_inference_network
from rdevos.model.memory_read import query_affinity, topk_readout
from rdevos.model.network import RDEVOS, KeyFeatures, aggregate_probs

logger = logging.getLogger(__name__)

__all__ = ["InferenceEngine", "EncodedFrame"]



@dataclass(frozen=True)
class EncodedFrame:
    """A frame as :meth:`InferenceEngine.encode` prepares it: network input and key features."""

    size: tuple[int, int]  #: (H, W) of the frame as given
    resized: tuple[int, int]  #: (H, W) the network sees, before padding
    x: torch.Tensor  #: (1, 3, Hp, Wp) normalised, resized and padded image, channels_last
    pad: tuple[int, int, int, int]  #: padding of ``x`` (left, right, top, bottom)
    feats: KeyFeatures  #: the key encoder's output
    net: object  #: the inference network that computed ``feats``
    #: with ``config.flip``: the mirrored frame as the mirror engine encoded it (``None`` without flip averaging)
    mirrored: EncodedFrame | None = None


@dataclass
class _Group:
    """Objects that entered at the same frame share one key memory (their keys are identical)."""

    ids: list[int]
    bank: MemoryBank


def _hflip(x: object) -> object:
    """Mirror a frame or mask left-right: PIL image, (H, W[, 3]) array or (..., H, W) tensor."""
    if isinstance(x, torch.Tensor):
        return x.flip(-1)
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x[:, ::-1])
    if hasattr(x, "transpose") and hasattr(x, "mode"):  # PIL
        from PIL import Image

        return x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # type: ignore[attr-defined]
    raise InputError(f"unsupported frame/mask type {type(x).__name__}")


class InferenceEngine:
    """Segment a video one frame at a time.

    The engine holds only the memory banks (first-frame memory, RDE and last memory frame per object group) and the
    object list: nothing grows with the number of frames. Objects may be added on any frame; objects added on the
    same frame form one group that shares key memory (numerically the same as the reference's per-object banks).

    Args:
        model: an :class:`RDEVOS` network (moved to ``device`` and put in eval mode; its values and state dict are
            not changed). The engine computes with an inference copy of it
            (:func:`~rdevos.model.fastpath.inference_network`: BatchNorm folded, channels_last, fused convolutions;
            bf16 weights for bf16 on CPU), reused by engines of the same network while its weights are unchanged. In
            fp32 on CPU the copy shares the weights it does not change, which are stored channels_last in place.
        config: inference settings (top-k, mem_every, memory mode and schedule, resolution, precision).
        device: where to run; ``None``/``"auto"`` picks CUDA, MPS or CPU. The model is moved there.
    """

    def __init__(self, model: RDEVOS, config: InferenceConfig | None = None, *,
                 device: torch.device | str | None = None) -> None:
        self.config = config or InferenceConfig()
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.model = model.to(self.device).eval()
        p = self.config.precision
        #: On CPU, bf16 runs with bf16 weights and activations (no autocast); elsewhere reduced precision is autocast.
        self._dtype = torch.bfloat16 if p is Precision.BF16 and self.device.type == "cpu" else torch.float32
        self.net = cached_inference_network(self.model, dtype=self._dtype, channels_last=True,
                                            fp32_stride=self.config.fp32_stride)
        self.objects = ObjectManager()
        self._groups: list[_Group] = []
        self._t = 0
        self._last_mem_t = 0
        self.memory_updated = False  #: whether the last step() wrote memory
        #: ``config.flip``: the engine of the mirrored video (same objects, its own memory).
        self._mirror = InferenceEngine(model, self.config.replace(flip=False), device=self.device) \
            if self.config.flip else None

    # ----------------------------------------------------------------- state
    @property
    def object_ids(self) -> list[int]:
        """User ids of the tracked objects; output channel ``i + 1`` belongs to ``object_ids[i]``."""
        return self.objects.ids

    @property
    def frame_index(self) -> int:
        """Number of frames processed so far (the index the next :meth:`step` gets)."""
        return self._t

    def memory_nbytes(self) -> int:
        """Bytes held by the memory banks."""
        return sum(g.bank.nbytes() for g in self._groups) + (self._mirror.memory_nbytes() if self._mirror else 0)

    def reset(self) -> None:
        """Forget all objects and memory (start a new video)."""
        self.objects.clear()
        self._groups.clear()
        self._t = 0
        self._last_mem_t = 0
        if self._mirror is not None:
            self._mirror.reset()

    def remove_objects(self, ids: Iterable[int]) -> None:
        """Stop tracking these object ids (their memory is dropped)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if i not in self.objects:
                raise KeyError(f"unknown object id {i}; known ids: {self.object_ids}")
        for g in list(self._groups):
            keep = [j for j, oid in enumerate(g.ids) if oid not in ids]
            if not keep:
                self._groups.remove(g)
            elif len(keep) < len(g.ids):
                g.bank.remove_objects(torch.tensor(keep, device=self.device))
                g.ids = [g.ids[j] for j in keep]
        self.objects.remove(ids)
        if self._mirror is not None:
            self._mirror.remove_objects(ids)

    def state_dict(self) -> dict[str, object]:
        """The engine's per-video state (object ids, memory banks, counters): small, constant in video length.

        Plain tensors, ints and lists only, so it saves with ``torch.save`` and loads with ``weights_only=True``.
        """
        groups = []
        for g in self._groups:
            b = g.bank
            groups.append({"ids": list(g.ids), "gt_key": b.gt_key, "gt_value": b.gt_value, "rde_key": b.rde_key,
                           "rde_value": b.rde_value, "last_key": b.last_key, "last_value": b.last_value})
        state: dict[str, object] = {"version": 1, "config": self.config.to_dict(), "object_ids": self.object_ids,
                                    "t": self._t, "last_mem_t": self._last_mem_t, "groups": groups}
        if self._mirror is not None:
            state["mirror"] = self._mirror.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a :meth:`state_dict` (same model and memory mode); processing continues bit-identically."""
        if state.get("config", {}).get("memory_mode") != self.config.memory_mode.value:  # type: ignore[union-attr]
            raise InputError("engine state was saved with a different memory mode")
        self.reset()
        self.objects.add(state["object_ids"])  # type: ignore[arg-type]
        self._t = int(state["t"])  # type: ignore[call-overload]
        self._last_mem_t = int(state["last_mem_t"])  # type: ignore[call-overload]
        for g in state["groups"]:  # type: ignore[attr-defined]
            dev = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in g.items()}
            bank = MemoryBank(self.config.memory_mode, dev["gt_key"], dev["gt_value"])
            bank.rde_key, bank.rde_value = dev["rde_key"], dev["rde_value"]
            bank.last_key, bank.last_value = dev["last_key"], dev["last_value"]
            self._groups.append(_Group(list(dev["ids"]), bank))
        if self._mirror is not None:
            if "mirror" not in state:
                raise InputError("engine state was saved without flip averaging; this engine has flip=True")
            self._mirror.load_state_dict(state["mirror"])  # type: ignore[arg-type]

    # ----------------------------------------------------------------- helpers
    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        p = self.config.precision
        if p is Precision.FP32 or self._dtype is not torch.float32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if p is Precision.BF16 else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _segment(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Per-object probabilities (K, Hp, Wp) of the current frame from memory, in object-id order."""
        key, f16_thin, _, f8, f4 = feats
        _, _, h, w = key.shape
        qk = key.flatten(2)
        readouts = []
        for g in self._groups:
            mk, sq, mvt = g.bank.stacked()
            r = topk_readout(query_affinity(mk, qk, sq), mvt, self.config.top_k)[0]  # (h*w, K*Cv)
            readouts.append(r.t().reshape(g.bank.num_objects, -1, h, w))
        readout = torch.cat(readouts, dim=0)
        if self.config.precision is not Precision.FP32:
            readout = readout.to(f16_thin.dtype)
        prob = torch.sigmoid(self.net.segment(readout, f16_thin, f8, f4)[:, 0].float())
        inv = channel_order([g.ids for g in self._groups], self.object_ids)
        if inv is not None:
            prob = prob[torch.tensor(inv, device=prob.device)]
        return prob

    def _encode_values(self, image: torch.Tensor, f16: torch.Tensor, obj_prob: torch.Tensor) -> torch.Tensor:
        """Values (1, K, Cv, h, w) of all objects from their aggregated probabilities (K, Hp, Wp)."""
        return self.net.encode_value(image, f16, obj_prob[None].to(image.dtype))

    def _add_memory(self, key: torch.Tensor, values: torch.Tensor, new_ids: list[int]) -> None:
        key5 = key.unsqueeze(2)  # (1, Ck, 1, h, w)
        for g in self._groups:
            idx = [self.objects.index(i) for i in g.ids]
            g.bank.add(key5, values[:, idx].unsqueeze(3), self.net.compress_memory)
        if new_ids:
            idx = [self.objects.index(i) for i in new_ids]
            bank = MemoryBank(self.config.memory_mode, key5, values[:, idx].unsqueeze(3))
            self._groups.append(_Group(list(new_ids), bank))

    def _parse_mask(self, mask: object, size: tuple[int, int], objects: Iterable[int] | None
                    ) -> tuple[torch.Tensor, list[int]]:
        if isinstance(mask, np.ndarray) or hasattr(mask, "mode"):
            arr = np.asarray(mask)
            if arr.ndim != 2:
                raise InputError(f"a mask must be an HxW label map, got shape {arr.shape}"
                                 + (f" (PIL mode {mask.mode!r}; use a palette 'P' or greyscale 'L' image)"
                                    if hasattr(mask, "mode") else ""))
            labels = torch.from_numpy(arr.astype(np.int64))
        elif isinstance(mask, torch.Tensor):
            if mask.ndim != 2 or mask.is_floating_point():
                raise InputError(f"a mask tensor must be an (H, W) integer label map, got {mask.dtype} "
                                 f"{tuple(mask.shape)}")
            labels = mask.long()
        else:
            raise InputError(f"unsupported mask type {type(mask).__name__}")
        if tuple(labels.shape) != tuple(size):
            raise InputError(f"mask size {labels.shape[0]}x{labels.shape[1]} (HxW) differs from the frame size "
                             f"{size[0]}x{size[1]}")
        ids = mask_object_ids(torch.unique(labels).tolist(), objects)
        return labels.to(self.device), ids

    # ----------------------------------------------------------------- main entry
    @torch.inference_mode()
    def encode(self, image: object) -> EncodedFrame:
        """Preprocess a frame and run the key encoder: the part of :meth:`step` that does not read the memory.

        It reads no engine state, so it may run ahead of :meth:`step` (e.g. for the next frame, in another thread);
        ``step(engine.encode(image))`` is ``step(image)``.
        """
        rgb = to_image_tensor(image, self.device)
        h, w = rgb.shape[-2:]
        size = resized_size(h, w, self.config.resolution)
        x, pad = pad_divide_by(resize_image(normalize(rgb), size), 16)
        # fp32 in: the fast network casts at its first reduced-precision layer (its high-resolution stages are fp32)
        x = x[None].contiguous(memory_format=torch.channels_last)
        with self._autocast():
            feats = self.net.encode_key(x)
        enc = EncodedFrame((int(h), int(w)), size, x, pad, feats, self.net)
        return enc if self._mirror is None else replace(enc, mirrored=self._mirror.encode(_hflip(image)))

    @torch.inference_mode()
    def step(self, image: object, mask: object | None = None, *, objects: Iterable[int] | None = None,
             is_last: bool = False) -> torch.Tensor:
        """Process the next frame.

        Args:
            image: RGB frame: PIL image, (H, W, 3) uint8 array, or (3, H, W) tensor (uint8 or float in [0, 1]); or
                what :meth:`encode` made of it (by an engine with the same network and settings).
            mask: optional (H, W) label map of this frame (user ids; 0 = background). Objects in it are added or
                re-annotated; other tracked objects keep their prediction outside the mask's objects.
            objects: ids in ``mask`` to use (default: every non-zero label in it). Listed ids absent from the mask
                are set to empty there.
            is_last: the video ends here, so the frame is not added to memory (saves work, same outputs).
        Returns:
            (K+1, H, W) float32 probabilities at the input size; channel 0 is the background and channel ``i + 1``
            belongs to ``object_ids[i]``.
        """
        prob = self._step(image, mask, objects, is_last)
        if self._mirror is not None:  # flip averaging: the mirrored video's probabilities, mirrored back
            if isinstance(image, EncodedFrame):
                if image.mirrored is None:
                    raise InputError("this frame was encoded by an engine without flip averaging")
                flipped: object = image.mirrored
            else:
                flipped = _hflip(image)
            mirrored = self._mirror._step(flipped, None if mask is None else _hflip(mask), objects, is_last)
            prob = (prob + mirrored.flip(-1)) / 2
        return prob

    def _step(self, image: object, mask: object | None, objects: Iterable[int] | None, is_last: bool
              ) -> torch.Tensor:
        cfg = self.config
        enc = image if isinstance(image, EncodedFrame) else self.encode(image)
        if enc.net is not self.net or enc.resized != resized_size(*enc.size, cfg.resolution):
            raise InputError("this frame was encoded by an engine with another network or settings")
        (h, w), size, x, pad, feats = enc.size, enc.resized, enc.x, enc.pad, enc.feats
        labels = ids = None
        if mask is not None:
            labels, ids = self._parse_mask(mask, (h, w), objects)
        t = self._t
        self.memory_updated = False
        with self._autocast():
            k = len(self.objects)
            hp, wp = x.shape[-2:]
            obj_prob = self._segment(feats) if self._groups else torch.zeros(k, hp, wp, device=self.device)
            new_ids: list[int] = []
            if labels is not None and ids is not None:
                new_ids = self.objects.add(ids)
                if new_ids:
                    obj_prob = torch.cat([obj_prob, obj_prob.new_zeros(len(new_ids), hp, wp)], dim=0)
                lab, _ = pad_divide_by(resize_labels(labels, size), 16)
                given = torch.stack([lab == i for i in ids]).float()
                region = given.sum(0) > 0.5
                obj_prob = obj_prob.masked_fill(region, 0.0)
                obj_prob[[self.objects.index(i) for i in ids]] = given
                prob = aggregate_probs(obj_prob)
                values = self._encode_values(x, feats.f16, prob[1:])
                self._add_memory(feats.key, values, new_ids)
                self._last_mem_t = t
                self.memory_updated = True
            else:
                prob = aggregate_probs(obj_prob) if k else obj_prob.new_ones(1, hp, wp)
                if k and not is_last and memory_due(t, self._last_mem_t, cfg.mem_every, cfg.schedule.value):
                    values = self._encode_values(x, feats.f16, prob[1:])
                    self._add_memory(feats.key, values, [])
                    self._last_mem_t = t
                    self.memory_updated = True
        self._t += 1
        prob = unpad(prob, pad)
        if tuple(prob.shape[-2:]) != (h, w):
            prob = F.interpolate(prob[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return prob

    # ----------------------------------------------------------------- outputs
    def probs_to_labels(self, prob: torch.Tensor) -> torch.Tensor:
        """Argmax of :meth:`step` output mapped to user ids: (H, W) int64 label map (0 = background)."""
        lut = torch.tensor([0] + self.object_ids, device=prob.device, dtype=torch.long)
        # max(0).indices is argmax(0) (first maximum on ties) at a tenth of its CPU time: torch's argmax over the
        # outer dimension is a slow strided reduction (~50 ms for a 480p frame, 1 thread).
        return lut[prob.max(dim=0).indices]

    def run(self, frames: Iterable[object], mask: object, *, objects: Iterable[int] | None = None
            ) -> Iterator[torch.Tensor]:
        """Convenience generator: annotate the first frame with ``mask`` and yield each frame's probabilities."""
        it = iter(frames)
        try:
            first = next(it)
        except StopIteration:
            raise InputError("the video has no frames") from None
        yield self.step(first, mask, objects=objects)
        prev = None
        for frame in it:
            if prev is not None:
                yield self.step(prev)
            prev = frame
        if prev is not None:
            yield self.step(prev, is_last=True)
