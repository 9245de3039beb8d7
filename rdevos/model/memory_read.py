"""Memory read: L2 affinity between memory and query keys, top-k softmax, weighted sum of memory values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["affinity", "topk_softmax", "readout", "read_memory", "query_affinity", "topk_readout"]


def affinity(mem_key: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Negative squared L2 distance without the query norm (it cancels in the softmax), scaled by 1/sqrt(Ck).

    Args:
        mem_key: (B, Ck, N) float.
        query_key: (B, Ck, M) float.
    Returns:
        (B, N, M) float32: ``(2 mk.qk - |mk|^2) / sqrt(Ck)``.
    """
    # Always fp32, also under autocast: affinities reach O(100) and bf16 would round them by ~0.5.
    with torch.autocast(mem_key.device.type, enabled=False):
        mk = mem_key.float()
        qk = query_key.float()
        a = mk.pow(2).sum(1).unsqueeze(2)
        b = 2 * (mk.transpose(1, 2) @ qk)
        return (b - a) / math.sqrt(mk.shape[1])


def topk_softmax(aff: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the ``top_k`` largest entries of each column.

    The reference exponentiates without subtracting the maximum; we subtract it (topk values are sorted, so it is
    the first row), which is the same up to rounding but cannot overflow for large keys.

    Args:
        aff: (B, N, M) affinity.
    Returns:
        weights (B, k, M) summing to 1 over k, and indices (B, k, M) into N.
    """
    k = min(top_k, aff.shape[1])
    values, indices = torch.topk(aff, k=k, dim=1)
    weights = (values - values[:, :1]).exp()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights, indices


def readout(weights: torch.Tensor, indices: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Weighted sum of memory values with a sparse (top-k) affinity.

    Args:
        weights, indices: (B, k, M) from :func:`topk_softmax`.
        mem_value: (B, K, Cv, N) values of K objects.
    Returns:
        (B, K, Cv, M) readout, in the dtype of ``mem_value``.
    """
    b, nobj, cv, n = mem_value.shape
    m = weights.shape[2]
    out = []
    for i in range(b):
        # Dense affinity with zeros outside the top-k (as the reference scatters it), then one GEMM for all objects.
        dense = torch.zeros(n, m, dtype=mem_value.dtype, device=mem_value.device)
        dense.scatter_(0, indices[i], weights[i].to(mem_value.dtype))
        out.append((mem_value[i].reshape(nobj * cv, n) @ dense).reshape(nobj, cv, m))
    return torch.stack(out)


def read_memory(mem_key: torch.Tensor, mem_value: torch.Tensor, query_key: torch.Tensor, top_k: int,
                mem_sqnorm: torch.Tensor | None = None) -> torch.Tensor:
    """Full top-k memory read for one query frame, through the fast path the engine uses.

    Same numbers as ``readout(*topk_softmax(affinity(...)))`` (the reference's dense formulation) up to float
    rounding.

    Args:
        mem_key: (B, Ck, N); mem_value: (B, K, Cv, N); query_key: (B, Ck, h, w); mem_sqnorm: optional cached
            ``|mk|^2`` (B, N).
    Returns:
        (B, K, Cv, h, w) readout.
    """
    b, _, h, w = query_key.shape
    nobj, cv = mem_value.shape[1:3]
    mem_value_t = mem_value.flatten(1, 2).transpose(1, 2).contiguous()  # (B, N, K*Cv) entry-major
    out = topk_readout(query_affinity(mem_key, query_key.flatten(2), mem_sqnorm), mem_value_t, top_k)  # (B, M, K*Cv)
    return out.transpose(1, 2).reshape(b, nobj, cv, h, w)


# ------------------------------------------------------------------------------------------------------------------
# Fast inference path. Query-major affinity makes top-k run over the contiguous last axis (about 3x faster on CPU)
# and the top-k readout becomes an embedding-bag gather (k * Cv per query pixel instead of a dense N x M GEMM).
# Same numbers as the dense path up to float rounding.


def query_affinity(mem_key: torch.Tensor, query_key: torch.Tensor, mem_sqnorm: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Affinity in query-major layout.

    Args:
        mem_key: (B, Ck, N); query_key: (B, Ck, M); mem_sqnorm: optional cached ``|mk|^2`` (B, N).
    Returns:
        (B, M, N) float32, the transpose of :func:`affinity`.
    """
    with torch.autocast(mem_key.device.type, enabled=False):
        mk = mem_key.float()
        qk = query_key.float()
        sq = mk.pow(2).sum(1) if mem_sqnorm is None else mem_sqnorm.float()
        scale = 1.0 / math.sqrt(mk.shape[1])
        return torch.baddbmm(sq.unsqueeze(1), qk.transpose(1, 2), mk, beta=-scale, alpha=2 * scale)


def topk_readout(aff: torch.Tensor, mem_value_t: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k softmax over the memory axis and weighted sum of the selected memory values.

    Args:
        aff: (B, M, N) from :func:`query_affinity`.
        mem_value_t: (B, N, D) memory values, entry-major (D = objects x channels).
    Returns:
        (B, M, D) readout in the dtype of ``mem_value_t``.
    """
    k = min(top_k, aff.shape[2])
    values, indices = torch.topk(aff, k=k, dim=2)
    weights = (values - values[..., :1]).exp()
    weights = weights / weights.sum(dim=2, keepdim=True)
    out = []
    for i in range(aff.shape[0]):
        table = mem_value_t[i]
        w = weights[i].to(table.dtype) if table.dtype != torch.float32 else weights[i]
        if table.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            table = table.float()
        out.append(F.embedding_bag(indices[i], table, per_sample_weights=w, mode="sum"))
    return torch.stack(out)
