from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rdevos.train.losses import (bootstrap_fraction, bootstrapped_ce, combine_frames, frame_weights, kl_div_mean,
                                 segmentation_loss)


def test_bootstrap_schedule_values() -> None:
    assert bootstrap_fraction(0, 100, 300) == 1.0
    assert bootstrap_fraction(99, 100, 300) == 1.0
    assert bootstrap_fraction(100, 100, 300) == pytest.approx(1.0)
    assert bootstrap_fraction(200, 100, 300) == pytest.approx(0.15 + 0.85 * 0.5)
    assert bootstrap_fraction(300, 100, 300) == pytest.approx(0.15)
    assert bootstrap_fraction(10_000, 100, 300) == pytest.approx(0.15)
    # official stage-2 numbers: 5K..17.5K
    assert bootstrap_fraction(11_250, 5000, 17500) == pytest.approx(0.575)


def test_bootstrapped_ce_is_top_p_mean() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (1, 8, 8), generator=g)
    raw = F.cross_entropy(logits, target, reduction="none").flatten()
    assert torch.allclose(bootstrapped_ce(logits, target, 1.0), raw.mean())
    k = int(64 * 0.25)
    assert torch.allclose(bootstrapped_ce(logits, target, 0.25), raw.sort(descending=True).values[:k].mean())


def test_frame_weighting_is_official_halving() -> None:
    l1, l2, l3, l4 = (torch.tensor(v) for v in (1.0, 2.0, 3.0, 5.0))
    total = combine_frames([l1, l2, l3, l4])
    assert torch.allclose(total, l1 / 16 + l2 / 8 + l3 / 4 + l4 / 2)
    assert torch.allclose(combine_frames([l1, l2]), l1 / 4 + l2 / 2)
    assert torch.allclose(combine_frames([l1, l2, l3, l4], "mean"), (l1 + l2 + l3 + l4) / 4)
    assert frame_weights(5) == [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    assert frame_weights(3, "mean") == [0.5, 0.5]


def test_kl_matches_kldivloss_mean_and_teacher_gets_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 16, 4, 4, generator=g, requires_grad=True)
    t = torch.randn(2, 16, 4, 4, generator=g, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = nn.KLDivLoss()(F.log_softmax(s, dim=1), F.softmax(t, dim=1))
    ours = kl_div_mean(s, t)
    assert torch.allclose(ours, ref, atol=1e-7)
    ours.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is not None and t.grad.abs().sum() > 0  # the reference does not detach the teacher
    # same gradient as the reference expression
    s2, t2 = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.KLDivLoss()(F.log_softmax(s2, dim=1), F.softmax(t2, dim=1)).backward()
    assert torch.allclose(t.grad, t2.grad, atol=1e-8) and torch.allclose(s.grad, s2.grad, atol=1e-8)


def test_kl_detached_teacher_gets_no_gradient() -> None:
    s = torch.randn(1, 8, 2, 2, requires_grad=True)
    t = torch.randn(1, 8, 2, 2, requires_grad=True)
    kl_div_mean(s, t, detach_teacher=True).backward()
    assert t.grad is None and s.grad is not None


def test_segmentation_loss_uses_two_channels_without_second_object() -> None:
    g = torch.Generator().manual_seed(2)
    logits = [torch.randn(2, 3, 8, 8, generator=g)]
    cls = torch.randint(0, 2, (2, 2, 8, 8), generator=g)
    selector = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    total, per = segmentation_loss(logits, cls, selector, 1.0, "mean")
    expected = sum(F.cross_entropy(logits[0][j:j + 1, :2], cls[j:j + 1, 1]) for j in range(2)) / 2
    assert torch.allclose(per[0], expected) and torch.allclose(total, expected)
