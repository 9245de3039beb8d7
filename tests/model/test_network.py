from __future__ import annotations

import pytest
import torch

from rdevos.config import ModelConfig
from rdevos.model.memory_read import affinity, read_memory, topk_softmax
from rdevos.model.network import RDEVOS, aggregate_probs
from tests.conftest import SHARED, TINY


def _spec_keys() -> dict[str, tuple[int, ...]]:
    path = SHARED / "docs" / "rdevos-state-dict-keys.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split(" ", 1)
        out[key] = tuple(int(s) for s in shape.strip("() \n").split(",") if s.strip())
    return out


def test_official_state_dict_layout_matches_checkpoint_keys() -> None:
    ref = _spec_keys()
    assert len(ref) == 435
    mine = {k: tuple(v.shape) for k, v in RDEVOS(ModelConfig()).state_dict().items()}
    assert mine == ref
    assert sum(p.numel() for p in RDEVOS().parameters()) == 64_020_836


def test_small_config_keeps_key_names() -> None:
    official = set(RDEVOS(ModelConfig()).state_dict())
    small = RDEVOS(TINY).state_dict()
    # Same module tree; fewer blocks only remove indexed entries.
    assert set(small) <= official
    assert TINY.key_channels == (16, 32, 64)


def test_encoders_and_decoder_shapes(tiny_model: RDEVOS) -> None:
    x = torch.randn(2, 3, 64, 96)
    feats = tiny_model.encode_key(x)
    assert feats.key.shape == (2, 16, 4, 6)
    assert feats.f16_thin.shape == (2, 32, 4, 6)
    assert feats.f8.shape[-2:] == (8, 12) and feats.f4.shape[-2:] == (16, 24)
    masks = torch.rand(2, 3, 64, 96)
    v = tiny_model.encode_value(x, feats.f16, masks)
    assert v.shape == (2, 3, 32, 4, 6)
    logits = tiny_model.segment(v[0], feats.f16_thin[:1], feats.f8[:1], feats.f4[:1])
    assert logits.shape == (3, 1, 64, 96)
    k, vv = tiny_model.compress_memory(torch.randn(1, 16, 2, 4, 6), torch.randn(1, 3, 32, 2, 4, 6))
    assert k.shape == (1, 16, 1, 4, 6) and vv.shape == (1, 3, 32, 1, 4, 6)


def test_value_encoder_objects_are_independent_given_others(tiny_model: RDEVOS) -> None:
    """Object i's value depends on its mask and on the sum of the others, not on their order."""
    x = torch.randn(1, 3, 64, 64)
    f16 = tiny_model.encode_key(x).f16
    m = torch.rand(1, 3, 64, 64)
    v = tiny_model.encode_value(x, f16, m)
    v_perm = tiny_model.encode_value(x, f16, m[:, [0, 2, 1]])
    torch.testing.assert_close(v[:, 0], v_perm[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v[:, 1], v_perm[:, 2], rtol=1e-4, atol=1e-5)


def test_topk_softmax_matches_dense_definition() -> None:
    torch.manual_seed(0)
    mk, qk = torch.randn(1, 8, 50), torch.randn(1, 8, 30)
    aff = affinity(mk, qk)
    expected = (2 * mk.transpose(1, 2) @ qk - mk.pow(2).sum(1)[:, :, None]) / 8 ** 0.5
    torch.testing.assert_close(aff, expected)
    w, idx = topk_softmax(aff, 5)
    assert w.shape == (1, 5, 30)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 30))
    # Reference: keep the 5 largest per column, exponentiate, normalise, zeros elsewhere.
    dense = torch.zeros_like(aff)
    vals, ind = aff.topk(5, dim=1)
    dense.scatter_(1, ind, vals.exp() / vals.exp().sum(1, keepdim=True))
    mv = torch.randn(1, 2, 4, 50)
    out = read_memory(mk, mv, qk.reshape(1, 8, 5, 6), 5)
    torch.testing.assert_close(out.reshape(1, 2, 4, 30), torch.einsum("bkcn,bnm->bkcm", mv, dense))
    # top_k larger than the memory is clamped to a full softmax.
    w_all, _ = topk_softmax(aff, 500)
    assert w_all.shape[1] == 50


def test_aggregate_probs() -> None:
    p = torch.tensor([[0.9, 0.1], [0.2, 0.0]]).reshape(2, 1, 2)
    out = aggregate_probs(p)
    assert out.shape == (3, 1, 2)
    torch.testing.assert_close(out.sum(0), torch.ones(1, 2))
    assert out.argmax(0).tolist() == [[1, 0]]


def test_fast_readout_equals_dense_reference_path() -> None:
    from rdevos.model.memory_read import query_affinity, topk_readout

    torch.manual_seed(1)
    mk, qk, mv = torch.randn(1, 16, 120), torch.randn(1, 16, 35), torch.randn(1, 3, 8, 120)
    aff_t = query_affinity(mk, qk)
    torch.testing.assert_close(aff_t, affinity(mk, qk).transpose(1, 2))
    fast = topk_readout(aff_t, mv.flatten(1, 2).transpose(1, 2).contiguous(), 7)  # (1, 35, 24)
    from rdevos.model.memory_read import readout

    dense = readout(*topk_softmax(affinity(mk, qk), 7), mv).reshape(1, 24, 35)  # the reference's scatter + GEMM
    torch.testing.assert_close(fast.transpose(1, 2), dense)
    # The public read (RDEVOS.read_memory) shares the engine's path and layout conversions.
    public = read_memory(mk, mv, qk.reshape(1, 16, 5, 7), 7).reshape(1, 24, 35)
    torch.testing.assert_close(public, dense)


def test_rde_norm_bounds_the_recursive_fold() -> None:
    import dataclasses

    from tests.conftest import TINY

    torch.manual_seed(0)
    plain = RDEVOS(TINY).eval()
    normed = RDEVOS(dataclasses.replace(TINY, rde_norm=True)).eval()
    assert plain.state_dict().keys() == normed.state_dict().keys()  # parameter-free: same checkpoint layout
    normed.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for p in plain.mem_compress.parameters():  # a SAM that grows its inputs, as a from-scratch one does
            p.mul_(3.0)
    normed.load_state_dict(plain.state_dict())
    key = torch.randn(1, TINY.key_dim, 1, 6, 7)
    value = torch.randn(1, 2, TINY.value_dim, 1, 6, 7)
    frames = [(torch.randn_like(key), torch.randn_like(value)) for _ in range(12)]
    with torch.no_grad():
        k1, v1 = key, value
        k2, v2 = key, value
        for fk, fv in frames:
            pk, pv = torch.cat([k1, fk], 2), torch.cat([v1, fv], 3)
            k1, v1 = normed.compress_memory(pk, pv)
            # each output vector has the mean norm of its two inputs at that position
            torch.testing.assert_close(k1.norm(dim=1), pk.norm(dim=1).mean(1, keepdim=True), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(v1.norm(dim=2), pv.norm(dim=2).mean(2, keepdim=True), rtol=1e-4, atol=1e-5)
            k2, v2 = plain.compress_memory(torch.cat([k2, fk], 2), torch.cat([v2, fv], 3))
    assert torch.isfinite(k1).all() and k1.norm(dim=1).max() < 3 * fk.norm(dim=1).max()
    assert not torch.isfinite(k2).all() or k2.norm(dim=1).max() > 100 * k1.norm(dim=1).max()  # plain one blows up
