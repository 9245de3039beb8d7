from __future__ import annotations

import numpy as np
import pytest
import torch

from rdevos import InferenceConfig, InputError
from rdevos.inference.runs import RunState
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
    saved: list[RunState] = []
    full = list(s.propagate(checkpoint=saved.append))
    assert [r.frame for r in saved] == [0, 2, 4, 6]
    d, i, st = saved[1].direction, saved[1].frame, saved[1].engine
    rest = list(s.propagate(resume=saved[1]))
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


def test_add_mask_takes_what_segment_mask_takes(tiny_model: RDEVOS, clip, caplog: pytest.LogCaptureFixture) -> None:
    """The session applies the CLI's rule (validate_mask): a mask 1 px narrower than the frames is resized with a
    warning, and an RGB export of a DAVIS-palette mask keeps its labels."""
    from PIL import Image

    from rdevos.io.masks import DAVIS_PALETTE

    frames, mask = clip  # 240x427, labels {3, 7}
    s = _session(tiny_model, clip)
    near = np.asarray(Image.fromarray(mask).resize((426, 240), Image.NEAREST))
    with caplog.at_level("WARNING", logger="rdevos.io.masks"):
        s.add_mask(0, near)
    assert "mask for frame 0 is 240x426 (HxW), the frames 240x427: resized" in caplog.text
    rgb = Image.fromarray(mask, "P")
    rgb.putpalette(DAVIS_PALETTE)
    s.add_mask(2, rgb.convert("RGB"))
    assert s.object_ids == [3, 7]
    out = {f.index: f.labels for f in s.propagate()}
    np.testing.assert_array_equal(out[2], mask)
    assert (out[0] == mask).mean() > 0.99
    with pytest.raises(InputError, match=r"120x214 \(HxW\) but the frames are 240x427"):  # half size: an error
        s.add_mask(1, mask[::2, ::2])


def test_both_carries_an_object_first_given_later_back_to_earlier_frames(clip) -> None:
    from rdevos.hub import load_model

    frames, mask = clip
    model = load_model(device="cpu")
    ref = VideoSession(model, frames, InferenceConfig(resolution=None), device="cpu")
    ref.add_mask(0, mask)  # both objects from frame 0: the reference for where object 7 is on frames 0..4
    want = {f.index: f.labels for f in ref.propagate()}
    s = VideoSession(model, frames, InferenceConfig(resolution=None), device="cpu")
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(4, (want[4] == 7).astype(np.uint8), obj_ids=[7])  # object 7 first given on frame 4
    out = list(s.propagate(direction="both"))
    final = {f.index: f for f in out if f.final}
    assert sorted(final) == list(range(len(frames)))
    assert len(out) == s.plan("both").total == len(frames) + 4  # frames 0..3 given again, fused
    for t in range(4):
        assert final[t].fused and final[t].object_ids == [3, 7]
        # Object 7 is carried back from frame 4. Object 3 comes from the forward pass, where it was tracked alone
        # and spreads into 7; on pixels both claim the nearer annotation wins (frames 1, 2: object 3).
        got7, want7 = final[t].labels == 7, want[t] == 7
        assert got7.sum() > 0.4 * want7.sum() and (got7 & want7).sum() > 0.7 * got7.sum(), t
        got, ref_ = final[t].labels > 0, want[t] > 0
        assert (got & ref_).sum() / (got | ref_).sum() > 0.85, t
    assert ((final[0].labels == 7) & (mask == 7)).sum() / (mask == 7).sum() > 0.7  # the real frame-0 object


def test_both_from_a_start_frame_covers_every_frame(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(0, mask)
    s.add_mask(5, mask)
    out = list(s.propagate(direction="both", start=5))
    assert sorted(f.index for f in out) == list(range(len(frames)))
    assert [f.index for f in out if f.direction is Direction.BACKWARD] == [4, 3, 2, 1, 0]


def test_both_resumed_in_the_forward_pass_needs_the_earlier_results(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    s = _session(tiny_model, clip)
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(4, (mask == 7).astype(np.uint8), obj_ids=[7])
    saved: list[RunState] = []
    full = list(s.propagate(direction="both", checkpoint=saved.append))
    mid = next(r for r in saved if r.direction is Direction.FORWARD and r.frame >= 4)
    with pytest.raises(InputError, match="earlier"):
        list(s.propagate(direction="both", resume=mid))
    first = {f.index: f.labels for f in full if f.direction is Direction.FORWARD}
    rest = list(s.propagate(direction="both", resume=mid, earlier=first.get))
    for a, b in zip(full[-len(rest):], rest):
        assert a.index == b.index
        np.testing.assert_array_equal(a.labels, b.labels)


def test_add_mask_ids_must_be_labels_of_the_mask(tiny_model: RDEVOS, clip) -> None:
    """Issue 25 (7): add_mask(f, mask_with_label_3, obj_ids=[5]) made an empty object 5 and dropped label 3."""
    from PIL import Image

    frames, mask = clip  # labels {3, 7}
    s = _session(tiny_model, clip)
    only3 = np.where(mask == 3, 3, 0).astype(np.uint8)
    with pytest.raises(InputError, match=r"obj_ids \[5\] are not labels of the mask for frame 4 \(its labels: \[3\]\)"):
        s.add_mask(4, only3, obj_ids=[5])
    with pytest.raises(InputError, match=r"obj_ids \[9\] are not labels"):
        s.add_mask(0, mask, obj_ids=[3, 9])
    assert s.annotated_frames == [] and s.object_ids == []  # nothing half-added
    # a binary mask with one id is that object (0/1, bool, a black/white image alike)
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[5])
    s.add_mask(2, mask == 7, obj_ids=[6])
    s.add_mask(4, Image.fromarray(((mask == 3) * 255).astype(np.uint8), "L"), obj_ids=[8])
    # a subset of a multi-object mask's labels annotates those objects only
    s.add_mask(6, mask, obj_ids=[7])
    assert s.object_ids == [5, 6, 8, 7]
    ann = s.annotations()
    np.testing.assert_array_equal(ann[0], np.where(mask == 3, 5, 0))
    np.testing.assert_array_equal(ann[6], np.where(mask == 7, 7, 0))


def test_objects_absent_from_a_frame(tiny_model: RDEVOS, clip) -> None:
    """An object said to be absent on a later frame is empty there (the web editor's 'not on this frame')."""
    frames, mask = clip  # labels {3, 7}
    s = _session(tiny_model, clip)
    s.add_mask(0, mask)
    only7 = np.where(mask == 7, 7, 0).astype(np.uint8)
    with pytest.raises(InputError, match=r"absent \[7\]: the mask for frame 3 holds these objects"):
        s.add_mask(3, only7, absent=[7])
    s.add_mask(3, only7, absent=[3])
    out = {f.index: f for f in s.propagate()}
    assert not (out[3].labels == 3).any() and (out[3].labels[mask == 7] == 7).all()
    assert out[3].object_ids == [3, 7]  # still tracked (it may come back), but not on frame 3
    s.add_mask(5, np.zeros_like(mask), absent=[3, 7])  # every object gone: an empty mask is fine then
    assert not list(s.propagate(start=5))[0].labels.any()
    with pytest.raises(InputError, match="has no object"):
        s.add_mask(6, np.zeros_like(mask))
