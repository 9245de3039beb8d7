"""Held-out multi-object clips made from held-out single-object data (the check of issue 23, see
scripts/make_multi_object_check.py): objects of other videos pasted, rescaled and drifting, over a video; and a
still image moved by a smooth camera path. Every frame gets a real (warped) annotation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rdevos.io.masks import write_mask

__all__ = ["make_video_clip", "make_coco_clip", "write_clip"]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def _pingpong(n: int, length: int) -> list[int]:
    """Frame indices 0..n-1 played forward and back to cover ``length`` frames."""
    if n == 1:
        return [0] * length
    cycle = list(range(n)) + list(range(n - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(length)]


def write_clip(out: Path, name: str, frames: list[np.ndarray], labels: list[np.ndarray]) -> None:
    jdir, adir = out / "JPEGImages" / name, out / "Annotations" / name
    jdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    for t, (f, lab) in enumerate(zip(frames, labels)):
        cv2.imwrite(str(jdir / f"{t:05d}.jpg"), f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        write_mask(adir / f"{t:05d}.png", lab.astype(np.uint8))


def make_video_clip(rng: np.random.Generator, bg: tuple[list[np.ndarray], list[np.ndarray]],
                    donors: list[tuple[list[np.ndarray], list[np.ndarray]]], scale: tuple[float, float],
                    min_pixels: int = 300) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    """Paste the donors' objects (rescaled, drifting) over the background sequence; returns frames, label maps
    (background object = 1, donor k = k + 2) and the parameters used."""
    frames_bg, masks_bg = bg
    h, w = masks_bg[0].shape
    length = len(frames_bg)
    frames = [f.astype(np.float32) for f in frames_bg]
    labels = [(m > 0).astype(np.uint8) for m in masks_bg]
    params = []
    for k, (d_frames, d_masks) in enumerate(donors):
        order = _pingpong(len(d_frames), length)
        c0 = _centroid(d_masks[0] > 0)
        for _attempt in range(50):
            sc = float(rng.uniform(*scale))
            pos = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.2, 0.8) * h])
            speed = rng.uniform(0.5, 3.0)
            ang = rng.uniform(0, 2 * math.pi)
            vel = np.array([math.cos(ang), math.sin(ang)]) * speed
            m0 = np.array([[sc, 0, pos[0] - sc * c0[0]], [0, sc, pos[1] - sc * c0[1]]])
            a0 = cv2.warpAffine((d_masks[0] > 0).astype(np.uint8), m0, (w, h), flags=cv2.INTER_NEAREST)
            if a0.sum() >= min_pixels:
                break
        params.append({"scale": sc, "start": pos.tolist(), "velocity_px_per_frame": vel.tolist()})
        p = pos.copy()
        for t in range(length):
            m = np.array([[sc, 0, p[0] - sc * c0[0]], [0, sc, p[1] - sc * c0[1]]])
            i = order[t]
            alpha = cv2.warpAffine((d_masks[i] > 0).astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
            img = cv2.warpAffine(d_frames[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            soft = cv2.GaussianBlur(alpha.astype(np.float32), (3, 3), 0)[..., None]  # 1-px feathered cut-out
            frames[t] = frames[t] * (1 - soft) + img.astype(np.float32) * soft
            labels[t][alpha] = k + 2
            p = p + vel
            for d, lim in ((0, w), (1, h)):  # bounce off the borders (the centre stays inside 10-90 %)
                if not 0.1 * lim <= p[d] <= 0.9 * lim:
                    vel[d] = -vel[d]
                    p[d] = float(np.clip(p[d], 0.1 * lim, 0.9 * lim))
    return [np.clip(f, 0, 255).astype(np.uint8) for f in frames], labels, params


def make_coco_clip(rng: np.random.Generator, image: np.ndarray, inst: np.ndarray, n_frames: int,
                   max_objects: int = 3, min_fraction: float = 0.003
                   ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]] | None:
    """A smooth camera path over a still image; objects = up to ``max_objects`` instances (None if none fits)."""
    h, w = inst.shape
    ids, counts = np.unique(inst, return_counts=True)
    cand = [int(i) for i, c in zip(ids, counts) if i != 0 and c >= min_fraction * h * w]
    if not cand:
        return None
    chosen = sorted(rng.choice(cand, min(max_objects, len(cand)), replace=False).tolist())
    lab = np.zeros_like(inst)
    for k, v in enumerate(chosen, start=1):
        lab[inst == v] = k
    # Start and end camera poses (scale, rotation, shift), eased in between, plus a small wobble.
    s0, s1 = rng.uniform(1.0, 1.3), rng.uniform(1.0, 1.6)
    r0, r1 = rng.uniform(-8, 8), rng.uniform(-15, 15)
    t0, t1 = rng.uniform(-0.06, 0.06, 2) * (w, h), rng.uniform(-0.15, 0.15, 2) * (w, h)
    frames, labels = [], []
    c = ((w - 1) / 2, (h - 1) / 2)
    for t in range(n_frames):
        a = 0.5 - 0.5 * math.cos(math.pi * t / max(n_frames - 1, 1))
        wob = 0.01 * math.sin(2 * math.pi * t / 9) * min(h, w)
        m = cv2.getRotationMatrix2D(c, r0 + (r1 - r0) * a, s0 + (s1 - s0) * a)
        m[:, 2] += t0 + (t1 - t0) * a + wob
        frames.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        labels.append(cv2.warpAffine(lab, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0))
    if not all((labels[0] == k).any() for k in range(1, len(chosen) + 1)):
        return None
    return frames, labels, {"instances": chosen, "scale": [s0, s1], "rotation": [r0, r1]}
