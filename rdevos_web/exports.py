"""The downloads of a job: result masks (palette PNGs), an overlay video, per-object masks and COCO JSON.

:func:`prepare` writes them under ``exports/v<version>/`` and records them with the job's version, so a page can
tell they no longer match the job once anything changes (:func:`current_exports`). The overlay video draws each
object in the colour the page shows it in and leaves hidden objects out; the COCO file (run-length encoded
masks, :mod:`pycocotools`) names each object as its category, as CVAT and Label Studio import them.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import rdevos
from rdevos import DAVIS_PALETTE, atomic_write, natural_sort_key, write_object_masks
from rdevos_web.drawing import object_palette, without
from rdevos_web.store import Job, JobInfo, safe_name

logger = logging.getLogger(__name__)

__all__ = ["prepare", "current_exports", "export_masks_zip", "export_overlay", "export_objects_zip", "export_coco",
           "KINDS"]

#: What :func:`prepare` writes: kind -> (file name suffix, label of its download link).
KINDS: dict[str, tuple[str, str]] = {
    "masks": ("_masks.zip", "Masks (palette PNGs, zip)"),
    "overlay": ("_overlay.mp4", "Overlay video (mp4)"),
    "objects": ("_objects.zip", "Per-object masks (zip)"),
    "coco": ("_coco.json", "COCO JSON (RLE masks)"),
}


def _stem(info: JobInfo) -> str:
    return safe_name(Path(info.name).stem, info.id)


def _labels(job: Job, index: int, info: JobInfo) -> np.ndarray:
    labels = job.result(index)
    return labels if labels is not None else np.zeros((info.height, info.width), np.uint8)


def export_masks_zip(job: Job, dest: Path) -> Path:
    """Zip of one palette PNG per frame (frames not segmented yet get an empty mask)."""
    info = job.info()
    buf = io.BytesIO()
    im = Image.fromarray(np.zeros((info.height, info.width), np.uint8))
    im.putpalette(list(DAVIS_PALETTE))
    im.save(buf, format="PNG")
    empty = buf.getvalue()
    with atomic_write(dest) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name in job.frame_names:
            p = job.masks_dir / f"{name}.png"
            zf.writestr(f"{name}.png", p.read_bytes() if p.exists() else empty)
    return dest


def export_overlay(job: Job, dest: Path) -> Path:
    """H.264 mp4 of the frames with the results drawn over them in the page's colours, hidden objects left out."""
    from rdevos import OverlayWriter

    info = job.info()
    objects = info.object_list
    palette = object_palette({o.id: o.colour for o in objects}, [o.id for o in objects])
    hidden = [o.id for o in objects if o.hidden]
    with OverlayWriter(dest, info.fps or 24.0, (info.height, info.width), palette) as wr:
        for fr in rdevos.FolderSource(job.frames_dir):
            wr.write(fr.image, without(_labels(job, fr.index, info), hidden))
    return dest


def export_objects_zip(job: Job, dest: Path) -> Path:
    """Zip of ``<object id>/<frame>.png`` binary masks (0/255), one per object and frame."""
    info = job.info()
    ids = sorted({o.id for o in info.object_list} | set(job.object_ids()))
    tmp = dest.parent / ".objects"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, name in enumerate(job.frame_names):
        write_object_masks(tmp, name, _labels(job, i, info), ids)
    with atomic_write(dest) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for oid in ids:
            for p in sorted((tmp / str(oid)).glob("*.png"), key=lambda q: natural_sort_key(q.name)):
                zf.write(p, f"{oid}/{p.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def export_coco(job: Job, dest: Path) -> Path:
    """COCO instance-segmentation JSON of the results: one image per frame, one category per object (its name),
    one annotation per object and frame it is on, with a run-length encoded mask, its box and area.

    Each annotation also carries the object's id as ``attributes.track_id`` (CVAT reads it as a track).
    """
    from pycocotools import mask as mask_utils

    info = job.info()
    objects = sorted(info.object_list, key=lambda o: o.id)
    known = {o.id for o in objects}
    images, annotations = [], []
    for i, path in enumerate(job.frame_files):
        images.append({"id": i + 1, "file_name": path.name, "width": info.width, "height": info.height,
                       "frame_index": i})
        labels = job.result(i)
        if labels is None:
            continue
        for obj_id in (int(v) for v in np.unique(labels) if v and int(v) in known):
            rle = mask_utils.encode(np.asfortranarray(labels == obj_id, dtype=np.uint8))
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": obj_id,
                "segmentation": {"size": [info.height, info.width], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0, "attributes": {"track_id": obj_id, "occluded": False},
            })
    coco = {
        "info": {"description": f"{info.name}: video object segmentation by rdevos", "version": "1.0",
                 "date_created": time.strftime("%Y-%m-%d")},
        "licenses": [],
        "categories": [{"id": o.id, "name": o.name, "supercategory": "object"} for o in objects],
        "images": images,
        "annotations": annotations,
    }
    with atomic_write(dest) as fh:
        fh.write(json.dumps(coco).encode())
    return dest


_WRITERS = {"masks": export_masks_zip, "overlay": export_overlay, "objects": export_objects_zip,
            "coco": export_coco}


def prepare(job: Job) -> dict[str, Path]:
    """Write every download of the job's current state; returns kind -> file.

    They go to ``exports/v<version>/`` and are recorded in the job's record with that version; downloads of
    earlier versions are removed.
    """
    info = job.info()
    folder = job.exports_dir / f"v{info.version}"
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(info)
    out = {kind: _WRITERS[kind](job, folder / f"{stem}{suffix}") for kind, (suffix, _) in KINDS.items()}
    for old in job.exports_dir.glob("v*"):
        if old.is_dir() and old != folder and old.name[1:].isdigit():
            shutil.rmtree(old, ignore_errors=True)
    job.update(exports={"version": info.version, "files": {k: str(p.relative_to(job.folder)) for k, p in out.items()}})
    return out


def current_exports(job: Job, info: JobInfo) -> dict[str, Path] | None:
    """The downloads prepared for the job as it is now; ``None`` if none were, or if the job changed since."""
    ex: dict[str, Any] = info.exports or {}
    if ex.get("version") != info.version:
        return None
    files = {k: job.folder / str(v) for k, v in (ex.get("files") or {}).items()}
    return files if files and all(p.is_file() for p in files.values()) else None
