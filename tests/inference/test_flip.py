"""Horizontal-flip test-time averaging (``InferenceConfig.flip``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos import InferenceConfig
from rdevos.errors import InputError
from rdevos.inference.engine import InferenceEngine
from rdevos.model.network import RDEVOS

CFG = InferenceConfig(resolution=None, top_k=20, mem_every=2)


def _run(engine: InferenceEngine, frames: list[object], mask: object) -> list[torch.Tensor]:
    return [engine.step(f, mask if t == 0 else None, is_last=t == len(frames) - 1) for t, f in enumerate(frames)]


def test_flip_averages_the_mirrored_video(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    frames = frames[:5]
    tta = _run(InferenceEngine(tiny_model, CFG.replace(flip=True)), frames, mask)
    plain = _run(InferenceEngine(tiny_model, CFG), frames, mask)
    mirrored = _run(InferenceEngine(tiny_model, CFG), [np.ascontiguousarray(f[:, ::-1]) for f in frames],
                    np.ascontiguousarray(mask[:, ::-1]))
    for t, (p, a, b) in enumerate(zip(tta, plain, mirrored)):
        assert p.shape == a.shape
        torch.testing.assert_close(p, (a + b.flip(-1)) / 2, rtol=0, atol=1e-6, msg=f"frame {t}")
    assert any(not torch.equal(p, a) for p, a in zip(tta[1:], plain[1:]))  # it does change the result


def test_frames_encoded_ahead_carry_the_mirrored_encoding(tiny_model: RDEVOS, clip) -> None:
    """step(engine.encode(image)) is step(image) with flip averaging too (the key encoder runs ahead in another
    thread on 2+ cores; it used to fail with 'unsupported frame/mask type EncodedFrame')."""
    frames, mask = clip
    frames = frames[:4]
    cfg = CFG.replace(flip=True)
    ref = _run(InferenceEngine(tiny_model, cfg), frames, mask)
    eng = InferenceEngine(tiny_model, cfg)
    ahead = _run(eng, [eng.encode(f) for f in frames], mask)
    for t, (a, b) in enumerate(zip(ref, ahead)):
        assert torch.equal(a, b), f"frame {t}"
    with pytest.raises(InputError, match="without flip averaging"):
        eng.step(InferenceEngine(tiny_model, CFG).encode(frames[0]))


def test_flip_is_mirror_equivariant_for_every_input_type(tiny_model: RDEVOS, clip) -> None:
    """Flip averaging of the mirrored video is exactly the mirror of flip averaging: the two engines swap roles."""
    frames, mask = clip
    frames = frames[:4]
    cfg = CFG.replace(flip=True)
    ref = _run(InferenceEngine(tiny_model, cfg), frames, mask)
    as_pil = _run(InferenceEngine(tiny_model, cfg), [Image.fromarray(f[:, ::-1]) for f in frames],
                  Image.fromarray(np.ascontiguousarray(mask[:, ::-1])))
    as_tensor = _run(InferenceEngine(tiny_model, cfg),
                     [torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)[:, :, ::-1])) for f in frames],
                     torch.from_numpy(np.ascontiguousarray(mask[:, ::-1])))
    for r, p, q in zip(ref, as_pil, as_tensor):
        torch.testing.assert_close(p.flip(-1), r, rtol=0, atol=1e-6)
        torch.testing.assert_close(q.flip(-1), r, rtol=0, atol=1e-6)


def test_flip_state_reset_and_object_removal(tiny_model: RDEVOS, clip) -> None:
    frames, mask = clip
    eng = InferenceEngine(tiny_model, CFG.replace(flip=True))
    single = InferenceEngine(tiny_model, CFG)
    _run(eng, frames[:2], mask)
    _run(single, frames[:2], mask)
    assert eng.memory_nbytes() == 2 * single.memory_nbytes()  # two memories, constant in length
    state = eng.state_dict()
    resumed = InferenceEngine(tiny_model, CFG.replace(flip=True))
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.step(frames[2]), eng.step(frames[2]), rtol=0, atol=0)
    with pytest.raises(InputError, match="without flip"):
        InferenceEngine(tiny_model, CFG.replace(flip=True)).load_state_dict(single.state_dict())
    eng.remove_objects([3])
    assert eng.object_ids == [7] and eng.step(frames[3]).shape[0] == 2
    eng.reset()
    assert eng.object_ids == [] and eng.memory_nbytes() == 0
