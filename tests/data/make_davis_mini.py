"""Write tests/data/davis-mini: a few real DAVIS-2016 train sequences at 214x120 for the dataset-runner tests.

Usage: python tests/data/make_davis_mini.py ../shared/data/davis2016-train
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

#: sequence -> number of frames kept (the runner tests use at most these many)
SEQUENCES = {"bear": 21, "car-turn": 11, "soccerball": 6}
SIZE = (214, 120)  # (W, H)


def main(src: Path, dst: Path) -> None:
    for seq, n in SEQUENCES.items():
        for sub in ("JPEGImages", "Annotations"):
            (dst / sub / seq).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{i:05d}"
            im = Image.open(src / "JPEGImages" / seq / f"{name}.jpg").convert("RGB").resize(SIZE, Image.BILINEAR)
            im.save(dst / "JPEGImages" / seq / f"{name}.jpg", quality=90)
            Image.open(src / "Annotations" / seq / f"{name}.png").resize(SIZE, Image.NEAREST).save(
                dst / "Annotations" / seq / f"{name}.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent / "davis-mini")
