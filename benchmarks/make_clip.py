"""The end-to-end benchmark clip: the bundled sample at 854x480, played forwards and backwards, with 2 objects.

Reproducible (same bytes on every run with the same Pillow): the 25 bundled frames (DAVIS ``bear``, 480x270) are
resized to 854x480 (bicubic) and written as JPEG (quality 90) in the order of :func:`rdevos.eval.bench.frame_order`
(forwards, backwards, forwards, ... without a jump cut); the first mask is the bundled one resized to 854x480
(nearest) and split into 2 objects by bounding-box columns, as :func:`rdevos.eval.bench.bench_clip` does.

    python benchmarks/make_clip.py /tmp/clip --frames 100      # -> /tmp/clip/frames/*.jpg, /tmp/clip/mask.png
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

import numpy as np
from PIL import Image

from rdevos.eval.bench import frame_order
from rdevos.io.masks import write_mask

WIDTH, HEIGHT = 854, 480


def make_clip(root: str | Path, frames: int = 100, objects: int = 2, size: tuple[int, int] = (WIDTH, HEIGHT),
              quality: int = 90) -> tuple[Path, Path]:
    """Write ``root/frames/00000.jpg ...`` and ``root/mask.png`` (objects 1..``objects``); returns both paths.

    Files already there with the right count are kept (the clip is deterministic).
    """
    root = Path(root)
    out, mask_path = root / "frames", root / "mask.png"
    if mask_path.exists() and out.is_dir() and len(list(out.glob("*.jpg"))) == frames:
        return out, mask_path
    sample = importlib.resources.files("rdevos") / "assets" / "sample"
    files = sorted((p for p in (sample / "frames").iterdir() if p.name.endswith(".jpg")), key=lambda p: p.name)
    images = []
    for f in files:
        with f.open("rb") as fh, Image.open(fh) as im:
            images.append(im.convert("RGB").resize(size, Image.BICUBIC))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    for i, j in enumerate(frame_order(len(images), frames)):
        images[j].save(out / f"{i:05d}.jpg", quality=quality)
    with (sample / "first_mask.png").open("rb") as fh, Image.open(fh) as m:
        fg = np.asarray(m.resize(size, Image.NEAREST)) > 0
    xs = np.nonzero(fg)[1]
    edges = np.linspace(xs.min(), xs.max() + 1, objects + 1).astype(int)
    labels = np.zeros(fg.shape, np.uint8)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]), start=1):
        labels[:, a:b][fg[:, a:b]] = k
    write_mask(mask_path, labels)
    return out, mask_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--objects", type=int, default=2)
    args = ap.parse_args()
    frames, mask = make_clip(args.root, args.frames, args.objects)
    print(f"{frames} ({args.frames} frames, {WIDTH}x{HEIGHT}), {mask}")


if __name__ == "__main__":
    main()
