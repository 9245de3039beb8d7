"""Dataset runners: segment every sequence of a DAVIS / YouTube-VOS / generic folder, resumable and shardable.

One runner for every dataset family; the family only picks the folder layout, which annotations are used and the
inference preset. Each sequence is written to ``OUT/.partial-<seq>/`` and renamed to ``OUT/<seq>/`` when complete,
so an interrupted run resumes by skipping finished sequences. Shards (``rank``/``world_size``, e.g. from torchrun)
take the sequences ``sorted(seqs)[rank::world_size]`` and write into the same output folder.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdevos.config import InferenceConfig
from rdevos.errors import InputError
from rdevos.io.frames import FolderSource
from rdevos.io.masks import DAVIS_PALETTE, read_mask, write_mask

logger = logging.getLogger(__name__)

__all__ = ["Dataset", "Method", "DatasetLayout", "find_layout", "run_dataset", "RunSummary", "make_submission_zip"]


class Dataset(str, enum.Enum):
    DAVIS2016 = "davis2016"
    DAVIS2017 = "davis2017"
    YOUTUBEVOS = "youtubevos"
    GENERIC = "generic"

    @property
    def preset(self) -> str:
        return {"davis2016": "davis2016", "davis2017": "davis2017", "youtubevos": "youtubevos",
                "generic": "modelscope"}[self.value]


class Method(str, enum.Enum):
    """What predicts the masks: the network, or a baseline that shows how much the network adds."""

    MODEL = "model"
    COPY_FIRST_MASK = "copy-first-mask"  #: every frame gets the latest given mask
    FLOW = "flow"  #: warp the previous mask with OpenCV DIS optical flow (backward flow, nearest sampling)


@dataclass(frozen=True)
class DatasetLayout:
    images: Path
    annotations: Path
    sequences: list[str]


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_dir()), None)


def find_layout(root: str | os.PathLike[str], dataset: Dataset | str, split: str = "val") -> DatasetLayout:
    """Locate frames, annotations and the sequence list of a dataset folder.

    DAVIS: ``JPEGImages[/480p]/<seq>``, ``Annotations[/480p]/<seq>``, list from ``ImageSets/2017/<split>.txt``,
    ``ImageSets/2016/<split>.txt`` or ``<split>.txt`` if present, else every annotated sequence.
    YouTube-VOS: ``<root>[/<split>]/JPEGImages/<vid>`` and ``Annotations/<vid>``. Generic: like DAVIS without lists.
    """
    r = Path(root)
    ds = Dataset(dataset)
    base = r / split if ds is Dataset.YOUTUBEVOS and (r / split / "JPEGImages").is_dir() else r
    images = _first_existing(base / "JPEGImages" / "480p", base / "JPEGImages")
    ann = _first_existing(base / "Annotations" / "480p", base / "Annotations")
    if images is None or ann is None:
        raise InputError(f"{r} does not look like a {ds.value} folder: need JPEGImages/ and Annotations/ "
                         f"(optionally with a 480p/ level{', or ' + split + '/JPEGImages' if ds is Dataset.YOUTUBEVOS else ''})")
    seqs: list[str] | None = None
    if ds in (Dataset.DAVIS2016, Dataset.DAVIS2017):
        for lst in (r / "ImageSets" / "2017" / f"{split}.txt", r / "ImageSets" / "2016" / f"{split}.txt",
                    r / f"{split}.txt"):
            if lst.is_file():
                seqs = [s.strip() for s in lst.read_text().split() if s.strip()]
                break
    if seqs is None:
        seqs = sorted(p.name for p in ann.iterdir() if p.is_dir())
    missing = [s for s in seqs if not (images / s).is_dir() or not (ann / s).is_dir()]
    if missing:
        raise InputError(f"{len(missing)} sequence(s) lack frames or annotations under {r}: {missing[:5]}")
    return DatasetLayout(images, ann, seqs)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _annotations(layout: DatasetLayout, seq: str, src: FolderSource, ds: Dataset
                 ) -> tuple[dict[int, np.ndarray], list[int] | None]:
    """Annotated frame index -> label map; plus the palette."""
    names = {n: i for i, n in enumerate(src.names)}
    files = sorted((layout.annotations / seq).glob("*.png"))
    if not files:
        raise InputError(f"sequence {seq}: no annotation PNG in {layout.annotations / seq}")
    if ds in (Dataset.DAVIS2016, Dataset.DAVIS2017):
        files = [f for f in files if f.stem == src.names[0]] or files[:1]  # semi-supervised: first frame only
    out: dict[int, np.ndarray] = {}
    palette = None
    for f in files:
        if f.stem not in names:
            raise InputError(f"annotation {f} matches no frame of sequence {seq}")
        lm = read_mask(f)
        labels = lm.labels
        if ds is Dataset.DAVIS2016:
            labels = (labels > 0).astype(np.uint8)  # DAVIS-2016 is single-object: binarise as the official code
        elif ds is Dataset.DAVIS2017:
            labels = np.where(labels == 255, 0, labels).astype(np.uint8)
        if labels.any():
            out[names[f.stem]] = labels
        palette = palette or lm.palette
    if not out:
        raise InputError(f"sequence {seq}: the annotations hold no object")
    return out, palette


def _baseline_frames(method: Method, src: FolderSource, ann: dict[int, np.ndarray]
                     ) -> Iterator[tuple[int, str, np.ndarray]]:
    import cv2

    first = min(ann)
    prev_gray = None
    current: np.ndarray | None = None
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method is Method.FLOW else None
    for fr in src:
        if fr.index < first:
            continue
        gray = cv2.cvtColor(fr.image, cv2.COLOR_RGB2GRAY) if flow is not None else None
        if current is not None and flow is not None and prev_gray is not None:
            f = flow.calc(gray, prev_gray, None)  # backward flow: where each pixel came from
            h, w = gray.shape
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            current = cv2.remap(current, gx + f[..., 0], gy + f[..., 1], cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if fr.index in ann:
            a = ann[fr.index]
            current = a.copy() if current is None else np.where(a > 0, a, np.where(np.isin(current, np.unique(a)), 0,
                                                                                      current)).astype(np.uint8)
        prev_gray = gray
        assert current is not None
        yield fr.index, fr.name, current


def run_dataset(root: str | os.PathLike[str], out: str | os.PathLike[str], *, dataset: Dataset | str = "davis2017",
                split: str = "val", model: object | None = None, method: Method | str = Method.MODEL,
                config: InferenceConfig | None = None, device: object = None,
                sequences: Sequence[str] | None = None, rank: int = 0, world_size: int = 1,
                progress: bool = True) -> RunSummary:
    """Segment a dataset into ``out/<seq>/<frame>.png`` (palette PNGs), resumable and shardable.

    Args:
        root: dataset folder (see :func:`find_layout`).
        out: output folder; finished sequences in it are skipped.
        dataset: ``davis2016`` (binarised, first-frame mask), ``davis2017`` (first-frame mask), ``youtubevos``
            (every annotation file; objects may enter later; relative memory schedule) or ``generic``.
        model: an :class:`~rdevos.model.network.RDEVOS` (required for ``method='model'``).
        method: ``model``, ``copy-first-mask`` or ``flow``.
        config: inference settings (default: the dataset's preset).
        sequences: subset to run (default: the split's list).
        rank, world_size: shard of the sequence list this process runs.
    """
    from tqdm.auto import tqdm

    ds, meth = Dataset(dataset), Method(method)
    layout = find_layout(root, ds, split)
    seqs = sorted(sequences if sequences is not None else layout.sequences)
    unknown = sorted(set(seqs) - set(layout.sequences)) if sequences is not None else []
    if unknown:
        raise InputError(f"unknown sequences for {root}: {unknown[:5]}")
    if not 0 <= rank < world_size:
        raise InputError(f"shard {rank} of {world_size} does not exist")
    seqs = seqs[rank::world_size]
    if meth is Method.MODEL and model is None:
        raise InputError("method 'model' needs a model")
    config = config or InferenceConfig.preset(ds.preset)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    for seq in tqdm(seqs, desc=f"{ds.value} shard {rank}/{world_size}", unit="seq", disable=not progress):
        final = out_dir / seq
        if final.is_dir():
            summary.skipped.append(seq)
            continue
        partial = out_dir / f".partial-{seq}"
        shutil.rmtree(partial, ignore_errors=True)
        src = FolderSource(layout.images / seq)
        ann, palette = _annotations(layout, seq, src, ds)
        palette = palette or list(DAVIS_PALETTE)
        t0 = time.perf_counter()
        n = 0
        if meth is Method.MODEL:
            from rdevos.inference.session import VideoSession

            sess = VideoSession(model, src, config, device=device)  # type: ignore[arg-type]
            for idx, labels in sorted(ann.items()):
                sess.add_mask(idx, labels)
            frames = ((f.index, f.name, f.labels) for f in sess.propagate())
        else:
            frames = _baseline_frames(meth, src, ann)
        for _, name, labels in frames:
            write_mask(partial / f"{name}.png", labels, palette)
            n += 1
        dt = time.perf_counter() - t0
        os.replace(partial, final)
        summary.done.append(seq)
        summary.frames += n
        summary.seconds += dt
        logger.info("%s: %d frames in %.1f s (%.2f frames/s)", seq, n, dt, n / max(dt, 1e-9))
    (out_dir / f"run_summary.rank{rank}.json").write_text(json.dumps(
        {"dataset": ds.value, "method": meth.value, "config": config.to_dict(), "done": summary.done,
         "skipped": summary.skipped, "frames": summary.frames, "seconds": round(summary.seconds, 2),
         "fps": round(summary.fps, 3)}, indent=2))
    return summary


def make_submission_zip(pred: str | os.PathLike[str], zip_path: str | os.PathLike[str], *,
                        dataset: Dataset | str, sequences: Sequence[str]) -> Path:
    """Zip predictions for an evaluation server (YouTube-VOS: ``Annotations/<vid>/*.png``; DAVIS: ``<seq>/*.png``).

    Raises InputError if a sequence is missing (e.g. a shard has not finished).
    """
    p = Path(pred)
    missing = [s for s in sequences if not (p / s).is_dir()]
    if missing:
        raise InputError(f"cannot build the submission: {len(missing)} sequence(s) not finished: {missing[:5]}")
    prefix = "Annotations/" if Dataset(dataset) is Dataset.YOUTUBEVOS else ""
    z = Path(zip_path)
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for s in sorted(sequences):
            for f in sorted((p / s).glob("*.png")):
                zf.write(f, f"{prefix}{s}/{f.name}")
    return z
