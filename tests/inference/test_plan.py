"""The propagation plan (torch-free): which frames each pass visits and gives, and the fusion rule."""

from __future__ import annotations

import numpy as np
import pytest

from rdevos.inference.plan import Direction, fuse_labels, plan_propagation


def test_forward_and_backward_ranges() -> None:
    p = plan_propagation({2: [1], 5: [2]}, 8, "forward")
    assert [(q.direction, list(q.frames())) for q in p.passes] == [(Direction.FORWARD, list(range(2, 8)))]
    assert p.total == 6 and p.outputs() == list(range(2, 8))
    p = plan_propagation({2: [1], 5: [2]}, 8, "backward")
    assert list(p.passes[0].frames()) == [5, 4, 3, 2, 1, 0] and p.total == 6
    assert plan_propagation({2: [1]}, None, "forward").total is None
    with pytest.raises(ValueError, match="known length"):
        plan_propagation({2: [1]}, None, "both")


def test_both_from_a_start_frame_covers_every_frame_when_frame_0_is_annotated() -> None:
    # the web app's "Start: this frame" on a correction at frame 12, the first mask on frame 0
    p = plan_propagation({0: [1], 12: [1]}, 25, "both", start=12)
    assert p.outputs() == list(range(25)) and p.total == 25
    fwd, bwd = p.passes
    assert (fwd.first, bwd.first) == (12, 12) and list(bwd.frames())[-1] == 0
    assert p.done_through(Direction.BACKWARD, 0) == 25


def test_both_carries_a_later_object_back_to_frame_0() -> None:
    p = plan_propagation({0: [1], 10: [2]}, 25, "both")
    fwd, bwd = p.passes
    assert fwd.first == 0 and bwd.first == 10  # backward from where object 2 is first given
    assert p.outputs() == list(range(25))
    assert bwd.fused == frozenset(range(10))  # object 2 exists on 0..9 only in the backward pass
    assert p.total == 35 and not p.is_final(Direction.FORWARD, 3) and p.is_final(Direction.FORWARD, 10)
    df, db = p.distances(4, fwd, bwd)
    assert df == {1: 4} and db == {2: 6}


def test_single_annotation_gives_every_frame_once() -> None:
    p = plan_propagation({3: [1, 2]}, 8, "both")
    assert p.total == 8 and p.outputs() == list(range(8))
    assert [t for q in p.passes for t in q.frames() if q.gives(t)] == [3, 4, 5, 6, 7, 2, 1, 0]
    assert plan_propagation({0: [1]}, 8, "both").passes[-1].direction is Direction.FORWARD  # nothing before 0


def test_fusion_takes_each_object_from_the_nearer_annotation() -> None:
    f = np.array([[1, 1, 0, 2]], np.uint8)
    b = np.array([[0, 1, 2, 2]], np.uint8)
    # object 1 nearer in the forward pass, object 2 nearer in the backward pass
    out = fuse_labels(f, b, {1: 1, 2: 5}, {2: 2})
    np.testing.assert_array_equal(out, [[1, 1, 2, 2]])
    np.testing.assert_array_equal(fuse_labels(out, b, {1: 1, 2: 5}, {2: 2}), out)  # idempotent
    # ties go forward; a pixel claimed by two chosen objects goes to the nearer one
    np.testing.assert_array_equal(fuse_labels(np.array([[1]], np.uint8), np.array([[2]], np.uint8), {1: 3}, {2: 1}),
                                  [[2]])
