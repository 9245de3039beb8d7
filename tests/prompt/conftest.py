"""Fixtures for the prompt-model tests: the embedded prompt model and the bundled clip's first frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rdevos.io.masks import read_mask
from tests.conftest import SAMPLE


@pytest.fixture(scope="session")
def predictor():  # type: ignore[no-untyped-def]
    from rdevos.prompt import load_prompt_predictor

    return load_prompt_predictor(device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def bear() -> tuple[np.ndarray, np.ndarray]:
    """First frame of the bundled clip (480x270) and its ground-truth object mask."""
    image = np.array(Image.open(SAMPLE / "frames" / "00000.jpg").convert("RGB"))
    return image, read_mask(SAMPLE / "first_mask.png").labels == 1
