from __future__ import annotations

import numpy as np
import pytest
import torch

from rdevos import InferenceConfig, InputError
from rdevos.inference.session import Direction, VideoSession
from rdevos.model.network import RDEVOS


def _session(model: RDEVOS, clip) -> VideoSession:
    frames, _ = clip
    return VideoSession(model, frames, InferenceConfig(resolution=None, mem_every=2))


def test_forward_from_annotated_frame(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(2, mask)
    out = list(s.propagate())
    assert [f.index for f in out] == list(range(2, len(frames)))
    assert (out[0].labels == mask).all()
    assert out[0].object_ids == [3, 7] and all(f.direction is Direction.FORWARD for f in out)


def test_both_directions_cover_every_frame_once(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(3, mask)
    out = list(s.propagate(direction="both"))
    assert sorted(f.index for f in out) == list(range(len(frames)))
    assert [f.index for f in out if f.direction is Direction.BACKWARD] == [2, 1, 0]
    back = list(s.propagate(direction="backward"))
    assert [f.index for f in back] == [3, 2, 1, 0]
    # The backward pass of "both" is the same computation as a backward-only pass.
    for a, b in zip([f for f in out if f.direction is Direction.BACKWARD], back[1:]):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_objects_entering_later_and_binary_masks(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(4, (mask == 7), obj_ids=[7])
    out = {f.index: f for f in s.propagate(return_probs=True)}
    assert out[3].object_ids == [3] and out[3].prob is not None and out[3].prob.shape[0] == 2
    assert out[4].object_ids == [3, 7]
    assert (out[4].labels[mask == 7] == 7).all()
    s.remove_object(3)
    out2 = list(s.propagate())
    assert out2[0].index == 4 and out2[0].object_ids == [7]


def test_resume_from_checkpoint_is_identical(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(0, mask)
    saved: list[tuple[Direction, int, dict]] = []
    full = list(s.propagate(checkpoint=lambda d, i, st: saved.append((d, i, st))))
    assert [i for _, i, _ in saved] == [0, 2, 4, 6]
    d, i, st = saved[1]
    rest = list(s.propagate(resume=(d, i, st)))
    assert [f.index for f in rest] == list(range(i + 1, len(frames)))
    for a, b in zip(full[i + 1:], rest):
        np.testing.assert_array_equal(a.labels, b.labels)
    # The state survives a save/load round trip with weights_only.
    import io

    buf = io.BytesIO()
    torch.save(st, buf)
    buf.seek(0)
    st2 = torch.load(buf, weights_only=True)
    rest2 = list(s.propagate(resume=(d, i, st2)))
    np.testing.assert_array_equal(rest2[-1].labels, full[-1].labels)


def test_session_errors(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    with pytest.raises(InputError, match="no mask"):
        list(s.propagate())
    with pytest.raises(InputError, match="outside the video"):
        s.add_mask(99, mask)
    with pytest.raises(InputError, match="size"):
        s.add_mask(0, mask[:10])
    with pytest.raises(InputError, match="no object"):
        s.add_mask(0, np.zeros_like(mask))
    with pytest.raises(KeyError):
        s.remove_object(5)
