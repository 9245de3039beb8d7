"""Build the multi-object held-out check of the default model (issue 23): reproducible, from held-out data only.

    python scripts/make_multi_object_check.py --out /work/scratch/i23-model/mo-check            # seed 23
    rdevos run-dataset --dataset generic --root /work/scratch/i23-model/mo-check -o PRED --eval \
        --resolution 480 --top-k 20 --mem-every 5

Two kinds of clips, written in the generic layout (``JPEGImages/<clip>/<frame>.jpg``, ``Annotations/<clip>/
<frame>.png`` palette label maps, every frame annotated) plus ``manifest.json`` (how each clip was made):

* ``mo-<bg>-<i>`` (video): a held-out DAVIS-2016 train sequence (object 1, full size) with the object of one or two
  other held-out sequences (objects 2, 3) cut out with their masks, rescaled to ``--scale`` (smaller objects),
  placed at random and drifting (bouncing off the frame borders) on top of it: the pasted objects move with
  their own video and with the drift, occlude the others and may look alike. Donor videos shorter than the
  background play back and forth. Masks are the real annotations, warped the same way (occluded pixels removed).
* ``coco-<image>`` (static, optional): a held-out coco128-seg image moved by a smooth camera path (pan, zoom,
  rotation) for ``--coco-frames`` frames; up to 3 instances (>= 0.3 % of the image) are the objects, the other
  instances stay as unlabelled distractors.

The held-out sets default to the training config's ``val_sequences`` and its coco source's ``exclude`` list, so
no clip shows anything the model was trained on. The pasted scenes are synthetic: scores on them are an upper
bound of real multi-object videos (objects move independently of the scene; no shadows or interaction).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rdevos.io.atomic import write_text_atomic
from rdevos.train import TrainConfig
from rdevos.train.config import SourceKind
from rdevos.train.data import read_sequence, read_yolo_seg
from rdevos.train.heldout import make_coco_clip, make_video_clip, write_clip

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("make_multi_object_check")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "lite3-davis.yaml",
                    help="training config: its val_sequences and its coco source's exclude list are the held-out data")
    shared = Path(os.environ.get("RDEVOS_SHARED", REPO.parent / "shared")) / "data"
    ap.add_argument("--davis-root", type=Path, default=shared / "davis2016-train")
    ap.add_argument("--coco-root", type=Path, default=shared / "coco128-seg")
    ap.add_argument("--clips", type=int, default=12, help="video clips (every held-out sequence is a background "
                                                          "at least once when clips >= sequences)")
    ap.add_argument("--scale", type=float, nargs=2, default=(0.4, 0.8), help="rescale range of pasted objects")
    ap.add_argument("--coco-frames", type=int, default=20, help="frames per coco clip (0: no coco clips)")
    ap.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "manifest.json").is_file():
        ap.error(f"--out {args.out} holds other files; give an empty or new folder (a folder this script wrote, with "
                 "its manifest.json, is rewritten with the same clips)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig.from_yaml(args.config, [f"val_root={args.davis_root}"])
    held = list(cfg.val_sequences)
    coco_held = sorted({s for st in cfg.stages for src in st.sources if src.kind is SourceKind.COCO
                        for s in src.exclude})
    rng = np.random.default_rng(args.seed)
    seqs = {name: read_sequence(args.davis_root, name) for name in held}
    manifest: dict[str, Any] = {"seed": args.seed, "scale": list(args.scale), "held_out_sequences": held,
                                "held_out_coco": coco_held, "clips": {}}
    for i in range(args.clips):
        bg = held[i % len(held)]
        n_donors = 2 if i % 2 == 0 else 1  # half with 3 objects, half with 2
        donors = [str(d) for d in rng.choice([s for s in held if s != bg], n_donors, replace=False)]
        frames, labels, params = make_video_clip(rng, seqs[bg], [seqs[d] for d in donors], tuple(args.scale))
        name = f"mo-{bg}-{i:02d}"
        write_clip(args.out, name, frames, labels)
        manifest["clips"][name] = {"background": bg, "donors": donors, "frames": len(frames), "pasted": params}
        logger.info("%s: %d frames, objects %s", name, len(frames), [bg, *donors])
    if args.coco_frames > 0 and coco_held:
        for stem in coco_held:
            img_p = next((args.coco_root / "images").rglob(f"{stem}.jpg"))
            lab_p = (args.coco_root / "labels" / img_p.relative_to(args.coco_root / "images")).with_suffix(".txt")
            image = cv2.imread(str(img_p), cv2.IMREAD_COLOR)[:, :, ::-1]
            inst = read_yolo_seg(lab_p, *image.shape[:2])
            made = make_coco_clip(rng, np.ascontiguousarray(image), inst, args.coco_frames)
            if made is None:
                logger.info("coco %s: no instance large enough; skipped", stem)
                continue
            frames, labels, params = made
            name = f"coco-{stem}"
            write_clip(args.out, name, frames, labels)
            manifest["clips"][name] = {"image": stem, "frames": len(frames), **params}
    write_text_atomic(args.out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['clips'])} clips to {args.out}")


if __name__ == "__main__":
    main()
