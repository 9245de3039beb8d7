"""Fixtures for the differential tests against the reference (ModelScope) RDE-VOS implementation.

Every test collected under tests/reference/ gets the ``reference`` marker. The ``reference`` fixture skips (with the
reason) when the pinned modelscope wheel cannot be downloaded or verified.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import modelscope_ref  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reference)


@pytest.fixture(scope="session")
def reference():
    """The reference modules (namespace from ``modelscope_ref.load_reference()``); skips if unavailable."""
    try:
        return modelscope_ref.load_reference()
    except modelscope_ref.ReferenceUnavailable as exc:
        pytest.skip(f"reference implementation unavailable: {exc}")


@pytest.fixture(scope="session")
def reference_net(reference):
    """The reference RDE_VOS eval network with the deterministic random weights of seed 0 (shared, do not modify)."""
    return modelscope_ref.make_reference_net(0)


@pytest.fixture(scope="session")
def davis2016():
    """Path of the shared DAVIS-2016 train subset; skips if missing."""
    root = modelscope_ref.davis2016_dir()
    if not (root / "JPEGImages").is_dir():
        pytest.skip(f"shared DAVIS-2016 data not found at {root} (set RDEVOS_SHARED)")
    return root
