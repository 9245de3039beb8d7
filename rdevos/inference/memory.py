"""Constant-size memory bank of one group of objects (objects that entered at the same frame)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rdevos.config import MemoryMode

__all__ = ["MemoryBank"]

Compressor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class MemoryBank:
    """Keys and per-object values of a group's memory frames; never grows with the video.

    Holds at most three frames: ``gt`` (the group's annotated frame), the RDE (compressed history) and ``last``
    (the most recent memory frame). :meth:`frames` returns them in the reference's read order, e.g.
    [gt, gt] then [RDE, last, gt, gt] for ``TWO_FRAMES_COMPRESS``.

    Shapes: keys (1, Ck, 1, h, w); values (1, K, Cv, 1, h, w) for the K objects of the group.
    """

    def __init__(self, mode: MemoryMode, key: torch.Tensor, value: torch.Tensor) -> None:
        self.mode = mode
        self.gt_key, self.gt_value = key, value
        self.rde_key: torch.Tensor | None = None
        self.rde_value: torch.Tensor | None = None
        self.last_key: torch.Tensor | None = None
        self.last_value: torch.Tensor | None = None
        self._cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def num_objects(self) -> int:
        return self.gt_value.shape[1]

    def add(self, key: torch.Tensor, value: torch.Tensor, compress: Compressor) -> None:
        """Add a memory frame: fold it into the RDE (compress modes) and/or keep it as ``last``."""
        self._cached = None
        self.last_key = self.last_value = None
        mode = self.mode
        if mode.compresses:
            prev_k = self.gt_key if self.rde_key is None else self.rde_key
            prev_v = self.gt_value if self.rde_value is None else self.rde_value
            self.rde_key, self.rde_value = compress(torch.cat([prev_k, key.to(prev_k.dtype)], dim=2),
                                                    torch.cat([prev_v, value.to(prev_v.dtype)], dim=3))
        if mode in (MemoryMode.TWO_FRAMES_COMPRESS, MemoryMode.LAST_COMPRESS, MemoryMode.TWO_FRAMES,
                    MemoryMode.LAST):
            self.last_key, self.last_value = key, value

    def frames(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Memory frames in read order: lists of keys (1, Ck, 1, h, w) and values (1, K, Cv, 1, h, w)."""
        gk, gv = self.gt_key, self.gt_value
        mk = gk if self.rde_key is None else self.rde_key
        mv = gv if self.rde_value is None else self.rde_value
        lk, lv = self.last_key, self.last_value
        mode = self.mode
        if mode is MemoryMode.TWO_FRAMES_COMPRESS:
            if lk is not None and lv is not None:
                return [mk, lk, gk, gk], [mv, lv, gv, gv]
            return [mk, gk], [mv, gv]
        if mode is MemoryMode.GT_COMPRESS:
            return [mk, gk], [mv, gv]
        if mode is MemoryMode.LAST_COMPRESS:
            return ([mk, lk], [mv, lv]) if lk is not None and lv is not None else ([mk], [mv])
        if mode is MemoryMode.COMPRESS:
            return [mk], [mv]
        if mode is MemoryMode.TWO_FRAMES:
            return ([lk, gk, gk], [lv, gv, gv]) if lk is not None and lv is not None else ([gk], [gv])
        if mode is MemoryMode.LAST:
            return ([lk], [lv]) if lk is not None and lv is not None else ([gk], [gv])
        return [gk], [gv]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Memory for a read, rebuilt only when the memory changes (every ``mem_every`` frames).

        Returns:
            keys (1, Ck, N) with N = T*h*w T-major like the reference, their squared norms (1, N), and values
            entry-major (1, N, K*Cv) for the gather readout.
        """
        if self._cached is None:
            keys, values = self.frames()
            k = torch.cat(keys, dim=2).flatten(2)
            v = torch.cat(values, dim=3).flatten(3)  # 1, K, Cv, N
            vt = v.flatten(1, 2).transpose(1, 2).contiguous()  # 1, N, K*Cv
            self._cached = (k, k.float().pow(2).sum(1), vt)
        return self._cached

    def remove_objects(self, keep: torch.Tensor) -> None:
        """Keep only the object rows selected by the index tensor ``keep``."""
        self._cached = None
        self.gt_value = self.gt_value[:, keep]
        if self.rde_value is not None:
            self.rde_value = self.rde_value[:, keep]
        if self.last_value is not None:
            self.last_value = self.last_value[:, keep]

    def nbytes(self) -> int:
        """Bytes held by the bank's tensors (the read cache excluded)."""
        ts = [self.gt_key, self.gt_value, self.rde_key, self.rde_value, self.last_key, self.last_value]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)
