"""Dataset runners: segment every sequence of a DAVIS / YouTube-VOS / generic folder, resumable and shardable.

One runner for every dataset family; the family only picks the folder layout, which annotations are used and the
inference preset. The protocol is semi-supervised throughout: the model is given each object once, on the frame it
first appears (DAVIS: the first frame), and every later annotation is ground truth for scoring only. A generic
dataset may instead give every annotation PNG as a prompt (``prompts='all'``, ``--prompts all``); the frames given
that way are then no longer ground truth (:func:`scored_prompts` finds those an evaluation would count).

Each sequence is written to ``OUT/.partial-<seq>/`` and renamed to ``OUT/<seq>/`` when complete,
so an interrupted run resumes by skipping finished sequences, and continues a half-done one after its last saved
engine state (:func:`rdevos.inference.runs.segment_to_folder`; same PNGs as an uninterrupted run). Shards (``rank``/``world_size``, e.g. from torchrun)
take the sequences ``sorted(seqs)[rank::world_size]`` and write into the same output folder.

YouTube-VOS follows the official protocol of STCN/XMem: frames are read from the "all frames" release
(``valid_all_frames/JPEGImages``) when it is there, for better propagation, but only the required frames (those in
``valid/JPEGImages``, every 5th) are written. Each object is annotated on the frame where it first appears
(``valid/meta.json``, else the first annotation PNG holding its label) and tracked from there on.
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
from rdevos.inference.runs import RunFolder, RunFolderError, run_signature, segment_to_folder
from rdevos.io.frames import FolderSource
from rdevos.io.masks import DAVIS_PALETTE, read_mask, write_mask

logger = logging.getLogger(__name__)

__all__ = ["Dataset", "Method", "Prompts", "DatasetLayout", "find_layout", "run_dataset", "RunSummary",
           "make_submission_zip", "scored_prompts"]


class Dataset(str, enum.Enum):
    DAVIS2016 = "davis2016"
    DAVIS2017 = "davis2017"
    YOUTUBEVOS = "youtubevos"
    GENERIC = "generic"

    @property
    def preset(self) -> str | None:
        """The official inference preset of the benchmark (``None`` for a generic dataset: the model's own
        settings)."""
        return {"davis2016": "davis2016", "davis2017": "davis2017", "youtubevos": "youtubevos",
                "generic": None}[self.value]


class Method(str, enum.Enum):
    """What predicts the masks: the network, or a baseline that shows how much the network adds."""

    MODEL = "model"
    COPY_FIRST_MASK = "copy-first-mask"  #: every frame gets the latest given mask
    FLOW = "flow"  #: warp the previous mask with OpenCV DIS optical flow (backward flow, nearest sampling)


class Prompts(str, enum.Enum):
    """Which annotation PNGs are given to the model."""

    FIRST = "first"  #: semi-supervised: each object on the frame it first appears; the rest is ground truth only
    ALL = "all"  #: generic datasets only: every annotation PNG is a prompt (interactive-style corrections)


@dataclass(frozen=True)
class DatasetLayout:
    images: Path  #: frames; for YouTube-VOS the required frames (``<split>/JPEGImages``)
    annotations: Path
    sequences: list[str]
    all_frames: Path | None = None  #: YouTube-VOS: ``JPEGImages`` of every frame, read instead of ``images``
    meta: Path | None = None  #: YouTube-VOS: ``<split>/meta.json`` (objects and the frames they appear on)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_dir()), None)


def _all_frames_dir(r: Path, base: Path, split: str, explicit: str | os.PathLike[str] | None) -> Path | None:
    """The ``JPEGImages`` folder of YouTube-VOS's all-frames release: given, or next to the split."""
    if explicit is not None:
        e = Path(explicit)
        found = _first_existing(e / "JPEGImages", e)
        if found is None:
            raise InputError(f"all-frames folder {e} does not exist (expected {e}/JPEGImages/<video>/ or "
                             f"{e}/<video>/)")
        return found
    cands = [r / "all_frames" / f"{split}_all_frames", r / f"{split}_all_frames",
             base.parent / f"{base.name}_all_frames", base.parent / "all_frames" / f"{base.name}_all_frames"]
    return _first_existing(*(c / "JPEGImages" for c in cands))


def find_layout(root: str | os.PathLike[str], dataset: Dataset | str, split: str = "val", *,
                all_frames_root: str | os.PathLike[str] | None = None, detect_all_frames: bool = True
                ) -> DatasetLayout:
    """Locate frames, annotations and the sequence list of a dataset folder.

    DAVIS: ``JPEGImages[/480p]/<seq>``, ``Annotations[/480p]/<seq>``, list from ``ImageSets/2017/<split>.txt``,
    ``ImageSets/2016/<split>.txt`` or ``<split>.txt`` if present, else every annotated sequence.
    YouTube-VOS: ``<root>[/<split>]/JPEGImages/<vid>`` and ``Annotations/<vid>``, optional ``meta.json`` beside
    them; the all-frames release is ``all_frames_root`` or, if ``detect_all_frames``, the first existing of
    ``<root>/all_frames/<split>_all_frames``, ``<root>/<split>_all_frames`` (also next to ``root`` when ``root`` is
    the split folder itself). Generic: like DAVIS without lists.
    """
    r = Path(root)
    ds = Dataset(dataset)
    if all_frames_root is not None and ds is not Dataset.YOUTUBEVOS:
        raise InputError(f"an all-frames folder is a YouTube-VOS notion; dataset {ds.value} reads JPEGImages only")
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
    if ds is not Dataset.YOUTUBEVOS:
        return DatasetLayout(images, ann, seqs)
    every = _all_frames_dir(r, base, split, all_frames_root) if (all_frames_root or detect_all_frames) else None
    if every is not None:
        missing = [s for s in seqs if not (every / s).is_dir()]
        if missing:
            raise InputError(f"{len(missing)} video(s) missing from the all-frames folder {every}: {missing[:5]}")
    meta = base / "meta.json"
    return DatasetLayout(images, ann, seqs, every, meta if meta.is_file() else None)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frames: int = 0  #: frames processed (YouTube-VOS with all frames: more than written)
    seconds: float = 0.0
    written: int = 0  #: masks written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _load_meta(path: Path) -> dict[str, dict[int, list[str]]]:
    """YouTube-VOS ``meta.json`` -> video -> object id -> the frames listed for it (from its first appearance)."""
    try:
        videos = json.loads(path.read_text())["videos"]
        return {str(vid): {int(k): [str(f) for f in o["frames"]] for k, o in v["objects"].items()}
                for vid, v in videos.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path} is not a YouTube-VOS meta.json (expected {{'videos': {{VIDEO: {{'objects': "
                         f"{{ID: {{'frames': [NAME, ...]}}}}}}}}}}): {type(e).__name__}: {e}") from None


def _annotations(layout: DatasetLayout, seq: str, src: FolderSource, ds: Dataset,
                 meta: dict[int, list[str]] | None = None, prompts: Prompts = Prompts.FIRST
                 ) -> tuple[dict[int, np.ndarray], list[int] | None]:
    """Annotated frame index -> label map of the objects given on that frame; plus the palette.

    DAVIS: the first frame's mask. YouTube-VOS and generic: each object only on the frame it first appears, which
    is the first of its frames in ``meta`` (YouTube-VOS meta.json) or else the first annotation PNG holding its
    label; the label map of a frame holds only the objects that start there (a later PNG cannot overwrite tracked
    objects). Generic with ``prompts=ALL``: every annotation PNG as it is.
    """
    names = {n: i for i, n in enumerate(src.names)}
    files = sorted((layout.annotations / seq).glob("*.png"))
    if not files:
        raise InputError(f"sequence {seq}: no annotation PNG in {layout.annotations / seq}")
    if ds in (Dataset.DAVIS2016, Dataset.DAVIS2017):
        files = [f for f in files if f.stem == src.names[0]] or files[:1]  # semi-supervised: first frame only
    starts: dict[str, list[int]] | None = None  # frame name -> objects first appearing there (from meta.json)
    if meta is not None:
        starts = {}
        for oid, frames in sorted(meta.items()):
            known = [f for f in frames if f in names]
            if not known:
                raise InputError(f"meta.json: object {oid} of video {seq} is listed on frames {frames[:3]}, none of "
                                 "which is a frame of the video")
            starts.setdefault(min(known, key=names.__getitem__), []).append(oid)
        files = [layout.annotations / seq / f"{n}.png" for n in sorted(starts, key=names.__getitem__)]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise InputError(f"meta.json: objects of video {seq} first appear on frames without an annotation "
                             f"PNG in {layout.annotations / seq}: {absent[:5]}")
    out: dict[int, np.ndarray] = {}
    palette = None
    seen: set[int] = set()
    for f in files:
        if f.stem not in names:
            raise InputError(f"annotation {f} matches no frame of sequence {seq}")
        lm = read_mask(f)
        labels = lm.labels
        if ds is Dataset.DAVIS2016:
            labels = (labels > 0).astype(np.uint8)  # DAVIS-2016 is single-object: binarise as the official code
        elif ds is Dataset.DAVIS2017:
            labels = np.where(labels == 255, 0, labels).astype(np.uint8)
        elif ds is Dataset.YOUTUBEVOS or prompts is Prompts.FIRST:  # generic, semi-supervised
            present = {int(v) for v in np.unique(labels) if v != 0}
            if starts is not None:
                ids = starts[f.stem]
                missing = [i for i in ids if i not in present]
                if missing:
                    raise InputError(f"{f}: meta.json says object(s) {missing} first appear on this frame, but the "
                                     f"mask holds only {sorted(present)}")
            else:
                ids = sorted(present - seen)
            seen.update(ids)
            labels = np.where(np.isin(labels, ids), labels, 0).astype(np.uint8)
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


def _model_id(model: object) -> str:
    """A cheap fingerprint of a network (config and a few weights), so a partial sequence of another model is redone."""
    import hashlib

    h = hashlib.sha256(repr(getattr(model, "config", None)).encode())
    params = list(getattr(model, "parameters", lambda: [])())
    for p in params[:2] + params[-2:]:
        h.update(p.detach().float().cpu().numpy().tobytes()[:65536])
    return h.hexdigest()


def _segment_sequence(model: object, src: FolderSource, config: InferenceConfig, device: object,
                      ann: dict[int, np.ndarray], partial: Path, palette: list[int], required: set[str] | None,
                      identity: dict[str, str]) -> tuple[int, set[str]]:
    """Propagate one sequence into ``partial`` (resumable mid-video); returns (frames computed, names written)."""
    from rdevos.inference.session import VideoSession

    sess = VideoSession(model, src, config, device=device)  # type: ignore[arg-type]
    for idx, labels in sorted(ann.items()):
        sess.add_mask(idx, labels)
    sig = run_signature(source=identity["sequence"], annotations=sess.annotations(), config=config, extra=identity)
    keep = None if required is None else required.__contains__
    try:
        res = segment_to_folder(sess, RunFolder(partial), signature=sig, palette=palette, write=keep)
    except RunFolderError as e:  # the partial folder is run-dataset's own: all of it goes
        logger.info("%s: %s; starting the sequence again", identity["sequence"], e)
        shutil.rmtree(partial, ignore_errors=True)
        res = segment_to_folder(sess, RunFolder(partial), signature=sig, palette=palette, write=keep)
    if res.resumed is not None:
        logger.info("%s: resumed the %s pass after frame %d", identity["sequence"], res.resumed.direction.value,
                    res.resumed.frame)
    names = {p.stem for p in partial.glob("*.png")}
    return res.frames, names


def run_dataset(root: str | os.PathLike[str], out: str | os.PathLike[str], *, dataset: Dataset | str = "davis2017",
                split: str = "val", model: object | None = None, method: Method | str = Method.MODEL,
                config: InferenceConfig | None = None, device: object = None,
                sequences: Sequence[str] | None = None, rank: int = 0, world_size: int = 1,
                all_frames_root: str | os.PathLike[str] | None = None, detect_all_frames: bool = True,
                prompts: Prompts | str = Prompts.FIRST, progress: bool = True) -> RunSummary:
    """Segment a dataset into ``out/<seq>/<frame>.png`` (palette PNGs), resumable and shardable.

    Args:
        root: dataset folder (see :func:`find_layout`).
        out: output folder; finished sequences in it are skipped.
        dataset: ``davis2016`` (binarised, first-frame mask), ``davis2017`` (first-frame mask), ``youtubevos``
            (each object from the frame it first appears on, per meta.json or its first annotation; relative memory
            schedule; all frames read, required frames written) or ``generic`` (each object from the first
            annotation PNG holding its label, or every annotation PNG with ``prompts='all'``).
        model: an :class:`~rdevos.model.network.RDEVOS` (required for ``method='model'``).
        method: ``model``, ``copy-first-mask`` or ``flow``.
        config: inference settings (default: the dataset's official preset, which replaces the model's own
            settings; a generic dataset has none: the model's, see :meth:`InferenceConfig.for_model`).
        sequences: subset to run (default: the split's list).
        rank, world_size: shard of the sequence list this process runs.
        all_frames_root: YouTube-VOS all-frames release (``.../valid_all_frames``); default: found next to the
            split if ``detect_all_frames``, else the required frames alone are segmented.
        prompts: ``first`` (semi-supervised, the default) or, for generic datasets, ``all`` (every annotation PNG
            is given to the model; an evaluation would then score inputs, see :func:`scored_prompts`).
    """
    from tqdm.auto import tqdm

    ds, meth = Dataset(dataset), Method(method)
    prm = _prompts(prompts, ds)
    layout = find_layout(root, ds, split, all_frames_root=all_frames_root, detect_all_frames=detect_all_frames)
    seqs = sorted(sequences if sequences is not None else layout.sequences)
    unknown = sorted(set(seqs) - set(layout.sequences)) if sequences is not None else []
    if unknown:
        raise InputError(f"unknown sequences for {root}: {unknown[:5]}")
    if not 0 <= rank < world_size:
        raise InputError(f"shard {rank} of {world_size} does not exist")
    seqs = seqs[rank::world_size]
    if meth is Method.MODEL and model is None:
        raise InputError("method 'model' needs a model")
    metas = _load_meta(layout.meta) if layout.meta is not None else {}
    if layout.all_frames is not None:
        logger.info("YouTube-VOS: reading every frame from %s, writing the frames of %s", layout.all_frames,
                    layout.images)
    config = config or InferenceConfig.for_model(getattr(model, "inference_defaults", None), ds.preset)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    for seq in tqdm(seqs, desc=f"{ds.value} shard {rank}/{world_size}", unit="seq", disable=not progress):
        final = out_dir / seq
        if final.is_dir():
            summary.skipped.append(seq)
            continue
        partial = out_dir / f".partial-{seq}"
        if meth is not Method.MODEL:
            shutil.rmtree(partial, ignore_errors=True)  # the baselines are quick: no mid-video resume
        src = FolderSource((layout.all_frames or layout.images) / seq)
        required: set[str] | None = None  # YouTube-VOS: the frames the submission needs; None: every frame
        if ds is Dataset.YOUTUBEVOS:
            required = set(FolderSource(layout.images / seq).names) if layout.all_frames else set(src.names)
            extra = sorted(required - set(src.names))
            if extra:
                raise InputError(f"video {seq}: {len(extra)} required frame(s) of {layout.images / seq} are missing "
                                 f"from the all-frames folder {layout.all_frames}: {extra[:5]}")
        meta = metas.get(seq)
        if layout.meta is not None and meta is None:
            logger.warning("video %s is not in %s: objects start on the first annotation holding them", seq,
                           layout.meta)
        ann, palette = _annotations(layout, seq, src, ds, meta, prm)
        palette = palette or list(DAVIS_PALETTE)
        t0 = time.perf_counter()
        n = 0
        written: set[str] = set()
        if meth is Method.MODEL:
            n, w = _segment_sequence(model, src, config, device, ann, partial, palette, required,
                                     {"dataset": ds.value, "sequence": seq, "model": _model_id(model)})
            written.update(w)
        else:
            for _, name, labels in _baseline_frames(meth, src, ann):
                n += 1
                if required is None or name in required:
                    write_mask(partial / f"{name}.png", labels, palette)
                    written.add(name)
        if required is not None:
            # Required frames before the first annotation have nothing to track, but a submission needs every one.
            blank = np.zeros(src.size, np.uint8)
            for name in sorted(required - written):
                write_mask(partial / f"{name}.png", blank, palette)
                written.add(name)
        dt = time.perf_counter() - t0
        RunFolder(partial).clear(outputs=False)  # the finished sequence keeps its PNGs only
        os.replace(partial, final)
        summary.done.append(seq)
        summary.frames += n
        summary.written += len(written)
        summary.seconds += dt
        logger.info("%s: %d frames in %.1f s (%.2f frames/s), %d masks written", seq, n, dt, n / max(dt, 1e-9),
                    len(written))
    (out_dir / f"run_summary.rank{rank}.json").write_text(json.dumps(
        {"dataset": ds.value, "method": meth.value, "config": config.to_dict(), "done": summary.done,
         "skipped": summary.skipped, "frames": summary.frames, "written": summary.written,
         "all_frames": str(layout.all_frames) if layout.all_frames else None,
         "seconds": round(summary.seconds, 2),
         "fps": round(summary.fps, 3), "prompts": prm.value}, indent=2))
    return summary


def _prompts(prompts: Prompts | str, ds: Dataset) -> Prompts:
    try:
        prm = Prompts(prompts)
    except ValueError:
        raise InputError(f"unknown prompts {prompts!r}: choose first or all") from None
    if prm is Prompts.ALL and ds is not Dataset.GENERIC:
        raise InputError(f"prompts 'all' is for generic datasets; {ds.value} is semi-supervised (its benchmark gives "
                         "each object's first annotation only)")
    return prm


def scored_prompts(root: str | os.PathLike[str], dataset: Dataset | str, split: str = "val",
                   sequences: Sequence[str] | None = None, prompts: Prompts | str = Prompts.FIRST
                   ) -> list[tuple[str, str, list[int]]]:
    """The prompts a DAVIS evaluation of the run would score: ``(sequence, frame, object ids)`` for each frame
    given to the model with objects on it that :func:`rdevos.eval.evaluate_davis` counts (ground-truth frames 1..N-2,
    objects 1..K with K the first ground-truth frame's largest label). Empty for the semi-supervised protocol
    unless an object first appears after the first frame with an id <= K."""
    ds = Dataset(dataset)
    prm = _prompts(prompts, ds)
    layout = find_layout(root, ds, split, detect_all_frames=False)
    out: list[tuple[str, str, list[int]]] = []
    for seq in sorted(sequences if sequences is not None else layout.sequences):
        gt = sorted((layout.annotations / seq).glob("*.png"))
        if len(gt) < 3:
            continue  # the evaluation refuses such a sequence itself
        first = read_mask(gt[0]).labels
        k = int(np.where(first == 255, 0, first).max())
        counted = {f.stem for f in gt[1:-1]}
        src = FolderSource(layout.images / seq)
        ann, _ = _annotations(layout, seq, src, ds, None, prm)
        for idx, labels in sorted(ann.items()):
            ids = [int(v) for v in np.unique(labels) if 0 < v <= k]
            if src.names[idx] in counted and ids:
                out.append((seq, src.names[idx], ids))
    return out


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
