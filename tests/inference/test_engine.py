from __future__ import annotations

import numpy as np
import pytest
import torch

from rdevos import InferenceConfig, InferenceEngine, InputError, MemoryMode, MemorySchedule, Precision
from rdevos.model.network import RDEVOS


def _labels(engine: InferenceEngine, prob: torch.Tensor) -> np.ndarray:
    return engine.probs_to_labels(prob).numpy()


def test_first_frame_reproduces_mask_and_keeps_user_ids(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    prob = eng.step(frames[0], mask)
    assert eng.object_ids == [3, 7]
    assert prob.shape == (3, *mask.shape)
    torch.testing.assert_close(prob.sum(0), torch.ones(mask.shape), rtol=0, atol=1e-5)
    assert (_labels(eng, prob) == mask).all()
    for f in frames[1:]:
        labels = _labels(eng, eng.step(f))
        assert set(np.unique(labels)) <= {0, 3, 7}


def test_memory_is_constant_in_video_length(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(mem_every=2, resolution=96))
    eng.step(frames[0], mask)
    sizes = []
    for t in range(1, 60):
        eng.step(frames[t % len(frames)])
        sizes.append(eng.memory_nbytes())
    # After the first update the bank holds gt + RDE + last frame and never grows again.
    assert len(set(sizes[4:])) == 1
    assert sizes[-1] == 3 * sizes[0]


@pytest.mark.parametrize("mode", list(MemoryMode))
def test_memory_modes_run(tiny_model: RDEVOS, clip, mode: MemoryMode) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(mem_every=2, memory_mode=mode, resolution=64))
    eng.step(frames[0], mask)
    for f in frames[1:6]:
        prob = eng.step(f)
        assert torch.isfinite(prob).all()


def test_schedules(tiny_model: RDEVOS, clip) -> None:
    """Absolute: updates at t % mem_every == 0; relative: mem_every frames after the last memory frame."""
    frames, mask = clip
    calls: dict[str, list[int]] = {"absolute": [], "relative": []}
    for sched in MemorySchedule:
        eng = InferenceEngine(tiny_model, InferenceConfig(mem_every=3, schedule=sched, resolution=64))
        orig = eng._add_memory

        def spy(*a, _o=orig, _s=sched.value, _e=eng, **k):  # type: ignore[no-untyped-def]
            calls[_s].append(_e.frame_index)
            return _o(*a, **k)

        eng._add_memory = spy  # type: ignore[method-assign]
        for t in range(10):
            f = frames[t % len(frames)]
            if t == 0:
                eng.step(f, mask)
            elif t == 4:
                eng.step(f, np.where(mask == 3, 9, 0).astype(np.uint8))  # new object at frame 4
            else:
                eng.step(f)
    assert calls["absolute"] == [0, 3, 4, 6, 9]
    assert calls["relative"] == [0, 3, 4, 7]


def test_objects_added_mid_video_and_removed(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    eng.step(frames[0], np.where(mask == 3, 3, 0).astype(np.uint8))
    eng.step(frames[1])
    second = np.where(mask == 7, 7, 0).astype(np.uint8)
    prob = eng.step(frames[2], second)
    assert eng.object_ids == [3, 7]
    labels = _labels(eng, prob)
    assert (labels[second == 7] == 7).all()
    assert len(eng._groups) == 2  # the late object has its own first-frame memory
    prob = eng.step(frames[3])
    assert prob.shape[0] == 3
    eng.remove_objects([3])
    assert eng.object_ids == [7]
    prob = eng.step(frames[4])
    assert prob.shape[0] == 2 and set(np.unique(_labels(eng, prob))) <= {0, 7}
    with pytest.raises(KeyError):
        eng.remove_objects([42])


def test_correction_on_later_frame_overrides_prediction(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    eng.step(frames[0], mask)
    eng.step(frames[1])
    prob = eng.step(frames[2], mask)  # re-annotate both objects
    assert (_labels(eng, prob) == mask).all()


def test_bad_inputs(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model)
    with pytest.raises(InputError, match="differs from the frame size"):
        eng.step(frames[0], mask[:-1])
    with pytest.raises(InputError, match="no object"):
        eng.step(frames[0], np.zeros_like(mask))
    with pytest.raises(InputError, match="HxW label map"):
        eng.step(frames[0], np.stack([mask] * 3, -1))
    with pytest.raises(InputError, match="shape"):
        eng.step(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(InputError, match="no frames"):
        list(eng.run([], mask))


def test_run_generator_and_tensor_inputs(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    a = [p.clone() for p in eng.run(frames[:4], mask)]
    eng2 = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    tens = [torch.from_numpy(f.copy()).permute(2, 0, 1) for f in frames[:4]]
    b = [eng2.step(tens[0], torch.from_numpy(mask))] + [eng2.step(t) for t in tens[1:]]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_bf16_close_to_fp32(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    out = {}
    for p in (Precision.FP32, Precision.BF16):
        model = RDEVOS(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        eng = InferenceEngine(model.eval(), InferenceConfig(precision=p, resolution=None))
        out[p] = [_labels(eng, prob) for prob in eng.run(frames[:5], mask)]
    agree = np.mean([(a == b).mean() for a, b in zip(out[Precision.FP32], out[Precision.BF16])])
    # Random weights give probabilities near 0.5, where bf16 rounding flips pixels; trained weights agree more.
    assert agree > 0.9


def test_labels_are_the_argmax_with_ties_to_the_first_channel(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None))
    eng.step(frames[0], mask)  # objects 3 and 7
    g = torch.Generator().manual_seed(0)
    prob = torch.randint(0, 3, (3, 60, 90), generator=g).float() / 2  # many exact ties
    want = torch.tensor([0, 3, 7])[prob.argmax(dim=0)]
    assert torch.equal(eng.probs_to_labels(prob), want)
    assert torch.equal(eng.probs_to_labels(prob[:, :, 5:]), want[:, 5:])  # strided, as the unpadded output is


def test_a_frame_encoded_ahead_gives_the_same_step(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    cfg = InferenceConfig(resolution=None, mem_every=2)
    a, b = InferenceEngine(tiny_model, cfg), InferenceEngine(tiny_model, cfg)
    for i, f in enumerate(frames[:5]):
        pa = a.step(f, mask if i == 0 else None)
        pb = b.step(b.encode(f), mask if i == 0 else None)
        assert torch.equal(pa, pb)
    other = InferenceEngine(tiny_model, InferenceConfig(resolution=96))
    with pytest.raises(InputError, match="another network or settings"):
        a.step(other.encode(frames[5]))
