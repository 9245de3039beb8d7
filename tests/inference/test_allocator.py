"""The CPU allocator tuning the engine applies: large tensors are reused from the heap, not re-mapped per frame."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

_PROBE = r"""
import resource, sys, torch
from rdevos.device import tune_cpu_allocator
on = tune_cpu_allocator()
for _ in range(10):  # warm-up: the heap grows until the 64 MiB blocks fit in what was freed
    x = torch.ones(16 << 20)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(16 << 20)
    del x
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env_value: str | None) -> tuple[bool, int]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RDEVOS_MALLOC_TUNING"}
    if env_value is not None:
        env["RDEVOS_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    on, faults = out.stdout.split()
    return on == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt only")
def test_tuned_allocator_reuses_large_tensors_without_page_faults() -> None:
    on, tuned = _probe(None)
    off, untuned = _probe("0")
    assert on and not off
    # 5 x 64 MiB = 80k pages of 4 KiB: re-mapped, each of the 5 allocations faults its 16k pages again; reused
    # from the heap after the warm-up, at most one of them does.
    assert untuned > 60_000, untuned
    assert tuned < untuned / 4, (tuned, untuned)
