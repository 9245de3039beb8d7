"""The torch-free bookkeeping shared by the engine and the export runtime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from rdevos import InferenceConfig, InferenceEngine, InputError
from rdevos.export import runtime
from rdevos.inference import bookkeeping
from rdevos.inference.bookkeeping import channel_order, mask_object_ids, memory_due


def test_rules() -> None:
    assert [t for t in range(8) if memory_due(t, 0, 3, "absolute")] == [0, 3, 6]
    assert memory_due(5, 3, 2, "relative") and not memory_due(4, 3, 2, "relative")
    assert channel_order([[1, 2], [3]], [1, 2, 3]) is None
    concatenated = [7, 3, 5]  # groups [7], [3, 5]; engine order 3, 5, 7
    inv = channel_order([[7], [3, 5]], [3, 5, 7])
    assert [concatenated[i] for i in inv] == [3, 5, 7]
    assert mask_object_ids([0, 2, 1, 2], None) == [2, 1]
    with pytest.raises(InputError, match="no object"):
        mask_object_ids([0], None)
    with pytest.raises(InputError, match="positive"):
        mask_object_ids([0, 1], [1, -2])


def test_engine_and_export_runtime_share_the_module_and_the_mask_checks(tiny_model) -> None:
    assert runtime.memory_due is bookkeeping.memory_due and runtime.channel_order is bookkeeping.channel_order
    eng = InferenceEngine(tiny_model, InferenceConfig(resolution=None), device="cpu")
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputError, match="positive"):  # the engine used to accept what the runtime refused
        eng.step(frame, torch.full((32, 32), -1, dtype=torch.long))


def test_the_module_imports_without_torch(tmp_path) -> None:
    (tmp_path / bookkeeping.SHIPPED_NAME).write_bytes(open(bookkeeping.__file__, "rb").read())
    code = ("import sys; sys.modules['torch'] = None; import rdevos_bookkeeping as b; "
            "assert b.memory_due(3, 0, 3, 'absolute'); "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'rdevos' and sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
