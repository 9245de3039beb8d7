"""Shared fixtures: real DAVIS frames, masks, and small random-weight networks (official key layout).

Data, from the most to the least available:

* ``SAMPLE``: the clip bundled with the package (25 frames of DAVIS ``bear`` at 480x270) -> fixture ``clip``;
* ``DAVIS_MINI``: ``tests/data/davis-mini``, three real DAVIS-2016 sequences at 214x120 (``bear`` 21 frames,
  ``car-turn`` 11, ``soccerball`` 6; made by ``tests/data/make_davis_mini.py``) -> fixture ``davis_mini``;
* ``DAVIS16``: the full shared DAVIS-2016 train subset, ``$RDEVOS_SHARED/data/davis2016-train`` (default
  ``../shared``) -> fixture ``davis16``, which skips without it. Only tests that need full-size frames, many
  sequences or long clips use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.config import ModelConfig
from rdevos.model.network import RDEVOS

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared"))
DAVIS16 = SHARED / "data" / "davis2016-train"
SAMPLE = REPO / "rdevos" / "assets" / "sample"
DAVIS_MINI = REPO / "tests" / "data" / "davis-mini"

#: A small architecture with the same module tree (and so the same key names) as the official one.
TINY = ModelConfig(key_block="basic", key_layers=(1, 1, 1), key_width=16, value_layers=(1, 1, 1), value_width=8,
                   key_dim=16, value_dim=32, decoder_dims=(16, 16), cbam_reduction=4)


def sample_frames(dest: Path, n: int) -> Path:
    """The first ``n`` frames of the bundled sample clip (480x270 JPEGs ``00000.jpg``...) copied into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((SAMPLE / "frames").glob("*.jpg"))[:n]:
        shutil.copy(f, dest / f.name)
    return dest


def sane_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministic init that keeps activations O(1) in deep random networks (so outputs are not degenerate)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.05)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def load_frames(seq: str, n: int, size: tuple[int, int] | None = None, start: int = 0, root: Path = DAVIS16
                ) -> list[np.ndarray]:
    """n RGB frames (HxWx3 uint8) of a DAVIS-2016 train sequence, optionally resized to (W, H)."""
    out = []
    for i in range(start, start + n):
        im = Image.open(root / "JPEGImages" / seq / f"{i:05d}.jpg").convert("RGB")
        if size:
            im = im.resize(size, Image.BILINEAR)
        out.append(np.asarray(im))
    return out


def load_mask(seq: str, idx: int = 0, size: tuple[int, int] | None = None, root: Path = DAVIS16) -> np.ndarray:
    """The label mask of frame ``idx`` of a DAVIS-2016 train sequence, optionally resized (nearest) to (W, H)."""
    im = Image.open(root / "Annotations" / seq / f"{idx:05d}.png")
    if size:
        im = im.resize(size, Image.NEAREST)
    return np.asarray(im).astype(np.uint8)


def split_objects(mask: np.ndarray, labels: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Split a binary object into len(labels) objects by bounding-box columns (gives a real multi-object mask)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    edges = np.linspace(xs.min(), xs.max() + 1, len(labels) + 1).astype(int)
    cols = np.arange(mask.shape[1])
    for lab, a, b in zip(labels, edges[:-1], edges[1:]):
        sel = (cols >= a) & (cols < b)
        out[:, sel] = np.where(mask[:, sel] > 0, lab, 0)
    return out


@pytest.fixture(scope="session")
def davis16() -> Path:
    if not DAVIS16.is_dir():
        pytest.skip(f"DAVIS-2016 train data not found at {DAVIS16} (set RDEVOS_SHARED)")
    return DAVIS16


@pytest.fixture(scope="session")
def davis_mini() -> Path:
    """The bundled DAVIS-2016 subset at 214x120 (``JPEGImages/<seq>``, ``Annotations/<seq>``); never skips."""
    assert (DAVIS_MINI / "JPEGImages" / "bear").is_dir(), f"{DAVIS_MINI} is missing from the checkout"
    return DAVIS_MINI


@pytest.fixture
def tiny_model() -> RDEVOS:
    torch.manual_seed(0)
    return sane_init_(RDEVOS(TINY), seed=0).eval()


@pytest.fixture(scope="session")
def official_model() -> RDEVOS:
    """Full official architecture with deterministic random weights."""
    torch.manual_seed(0)
    return sane_init_(RDEVOS(ModelConfig()), seed=1).eval()


@pytest.fixture
def clip() -> tuple[list[np.ndarray], np.ndarray]:
    """8 real frames (240x427) of 'bear' (the bundled sample clip) and a 2-object first-frame mask, labels {3, 7}."""
    size = (427, 240)
    frames = [np.asarray(Image.open(SAMPLE / "frames" / f"{i:05d}.jpg").convert("RGB").resize(size, Image.BILINEAR))
              for i in range(8)]
    mask = np.asarray(Image.open(SAMPLE / "first_mask.png").resize(size, Image.NEAREST)).astype(np.uint8)
    return frames, split_objects(mask, (3, 7))
