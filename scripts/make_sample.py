"""Regenerate the bundled sample clip ``rdevos/assets/sample`` from DAVIS-2016 ``bear``.

Usage (from the repository root)::

    python scripts/make_sample.py [--davis ../shared/data/davis2016-train] [--frames 25] [--width 480]

Writes ``frames/00000.jpg ...`` (Pillow LANCZOS, progressive JPEG quality 85), ``first_mask.png`` (frame-0
annotation resized with NEAREST, palette PNG with ``DAVIS_PALETTE``, label 1) and ``LICENSE.md``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rdevos.io.masks import write_mask  # noqa: E402

logger = logging.getLogger("make_sample")

LICENSE_TEXT = """\
# Sample clip licence and attribution

The frames in `frames/` and the mask `first_mask.png` are the first {n} frames of the
sequence **`bear`** of the DAVIS-2016 dataset (train split), downscaled to {w}x{h} pixels
(frames: Pillow LANCZOS, progressive JPEG quality 85; mask: nearest neighbour, palette PNG, label 1 = bear).
They were produced by `scripts/make_sample.py`.

DAVIS: A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation
<https://graphics.ethz.ch/~perazzif/davis/index.html>

The sequences are owned by the authors of DAVIS. This derivative is distributed under the
same terms, the Creative Commons Attribution-NonCommercial 4.0 International licence
([CC BY-NC 4.0](http://creativecommons.org/licenses/by-nc/4.0)): you may share and adapt it
for **non-commercial** purposes, giving appropriate credit and indicating changes. This
licence applies to these sample files only, not to the rdevos source code (MIT).

## Citation

Please cite DAVIS in your publications if it helps your research:

```bibtex
@inproceedings{{Perazzi_CVPR_2016,
  author    = {{Federico Perazzi and
               Jordi Pont-Tuset and
               Brian McWilliams and
               Luc Van Gool and
               Markus Gross and
               Alexander Sorkine-Hornung}},
  title     = {{A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation}},
  booktitle = {{The IEEE Conference on Computer Vision and Pattern Recognition (CVPR)}},
  year      = {{2016}}
}}
```
"""


def main(argv: list[str] | None = None) -> int:
    """Build the sample folder; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", type=Path, default=REPO.parent / "shared/data/davis2016-train")
    parser.add_argument("--sequence", default="bear")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--out", type=Path, default=REPO / "rdevos/assets/sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    src_frames = sorted((args.davis / "JPEGImages" / args.sequence).glob("*.jpg"))[: args.frames]
    if len(src_frames) < args.frames:
        parser.error(f"found {len(src_frames)} frames in {args.davis}/JPEGImages/{args.sequence}, need {args.frames}")
    first_ann = args.davis / "Annotations" / args.sequence / f"{src_frames[0].stem}.png"

    out_frames = args.out / "frames"
    if out_frames.exists():
        shutil.rmtree(out_frames)
    out_frames.mkdir(parents=True)

    size = None
    for i, path in enumerate(src_frames):
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            size = (args.width, round(h * args.width / w))
            im.resize(size, Image.Resampling.LANCZOS).save(
                out_frames / f"{i:05d}.jpg", quality=args.quality, optimize=True, progressive=True
            )
    assert size is not None

    with Image.open(first_ann) as ann:
        labels = np.array(ann.resize(size, Image.Resampling.NEAREST), dtype=np.uint8)
    labels = (labels > 0).astype(np.uint8)  # single object: label 1
    write_mask(args.out / "first_mask.png", labels)

    (args.out / "LICENSE.md").write_text(LICENSE_TEXT.format(n=args.frames, w=size[0], h=size[1]), encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    logger.info("wrote %d frames (%dx%d) to %s, %.0f KiB in total", len(src_frames), size[0], size[1], args.out, total / 1024)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
