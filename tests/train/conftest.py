"""Training tests run with one torch thread: on a shared 2-core machine two threads stall at every OpenMP
barrier (an order of magnitude slower for the small ops of tiny models)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
