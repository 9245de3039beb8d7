"""Semi-supervised DAVIS J&F evaluation with the official ``davis2017-evaluation`` conventions.

Conventions (identical to the official ``DAVISEvaluation(task="semi-supervised")``):

* Ground truth: ``<gt_root>/<seq>/*.png`` (sorted), palette or grayscale PNGs of labels; value 255 is void and
  becomes background. ``gt_root`` may be the DAVIS root (holding ``Annotations/480p``), the ``Annotations`` folder
  (holding ``480p``) or a folder of sequence folders.
* Objects: K = the maximum label of the GT's first frame; objects 1..K, each scored on its binary mask
  ``label == k``. GT labels > K are ignored; a label <= K absent from frame 0 still counts.
* Frames: only 1..N-2 are counted (first and last excluded); their predictions ``<pred_root>/<seq>/<frame>.png``
  are never opened, so they may be missing.
* A label missing from a prediction is an empty mask. Labels are not matched or permuted.
* Per object: :func:`~rdevos.eval.metrics.db_statistics` of the counted frames. Global: every number is the mean
  over all objects (not sequences); J&F-Mean = (J-Mean + F-Mean) / 2.

Bad input (official behaviour -> ours). We raise :class:`~rdevos.errors.InputError` naming the sequence, frame
or file and the problem, where the official code crashes, exits 0 without results, or hangs:

* missing GT or prediction folder, or a sequence folder missing in the predictions (official: crash);
* a counted prediction PNG missing (official: prints "<seq> frame <id> not found!" and exits with status 0);
* a counted prediction of another size than its GT frame (official: broadcast ``ValueError`` or
  ``AssertionError``); the message gives both sizes as WxH;
* a prediction label > K (official: prints a notice and exits with status 0); the message names the label, K
  and the file;
* a prediction PNG that is not mode 'L' or 'P' (e.g. RGB/RGBA; official: crash or nonsense); 'L' and 'P'
  pixel values are labels;
* also: a sequence with fewer than 3 GT frames, no object in the GT's first frame, or GT frames of different
  sizes (official: NaN numbers or a crash).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rdevos.errors import InputError
from rdevos.eval.metrics import BOUND_TH, db_statistics, frame_scores

__all__ = ["GLOBAL_COLUMNS", "OBJECT_COLUMNS", "EvalResult", "ObjectStats", "SequenceScores", "evaluate_davis"]

logger = logging.getLogger(__name__)

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""Global metric names, in the official CSV order."""
OBJECT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""Per-object metric names, in the order of the official ``DAVISEvaluation.evaluate`` output."""

_LABEL_MODES = ("P", "L")


@dataclass(frozen=True)
class SequenceScores:
    """Per-frame scores of one sequence.

    Attributes:
        name: sequence name.
        frames: ids (file stems) of the counted frames 1..N-2, length T.
        j: (K, T) float64 region similarity; row k-1 is object k.
        f: (K, T) float64 boundary F.
    """

    name: str
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.j.shape[0])


@dataclass(frozen=True)
class ObjectStats:
    """Official per-object statistics over the counted frames."""

    sequence: str
    object_id: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float

    @property
    def name(self) -> str:
        """Official name ``<seq>_<k>``."""
        return f"{self.sequence}_{self.object_id}"

    def to_dict(self) -> dict[str, float]:
        """Statistics keyed by :data:`OBJECT_COLUMNS`."""
        return dict(
            zip(OBJECT_COLUMNS, (self.j_mean, self.j_recall, self.j_decay, self.f_mean, self.f_recall, self.f_decay))
        )


@dataclass(frozen=True)
class EvalResult:
    """Result of :func:`evaluate_davis`.

    Attributes:
        sequences: per-frame scores, keyed by sequence name, in evaluation order.
        objects: per-object statistics, in sequence order then object id.
        global_metrics: keyed by :data:`GLOBAL_COLUMNS`; each is the mean over all objects.
    """

    sequences: dict[str, SequenceScores]
    objects: tuple[ObjectStats, ...]
    global_metrics: dict[str, float]

    @classmethod
    def from_sequences(cls, sequences: Iterable[SequenceScores]) -> EvalResult:
        """Aggregate per-frame scores exactly as the official ``evaluation_method.py`` does."""
        seqs = {s.name: s for s in sequences}
        objects = []
        for s in seqs.values():
            for i in range(s.num_objects):
                objects.append(ObjectStats(s.name, i + 1, *db_statistics(s.j[i]), *db_statistics(s.f[i])))
        if not objects:
            raise InputError("no objects to evaluate")
        # np.mean over the per-object list, as the official code does (same summation order, same floats)
        j_m, j_r, j_d, f_m, f_r, f_d = (float(np.mean([getattr(o, a) for o in objects])) for a in _OBJECT_ATTRS)
        values = ((j_m + f_m) / 2.0, j_m, j_r, j_d, f_m, f_r, f_d)
        return cls(seqs, tuple(objects), dict(zip(GLOBAL_COLUMNS, values)))

    @property
    def jf_mean(self) -> float:
        return self.global_metrics["J&F-Mean"]


_OBJECT_ATTRS = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay")


def evaluate_davis(
    gt_root: str | os.PathLike[str],
    pred_root: str | os.PathLike[str],
    sequences: Sequence[str] | None = None,
    *,
    processes: int | None = None,
    progress: bool = False,
    bound_th: float = BOUND_TH,
) -> EvalResult:
    """Semi-supervised DAVIS J&F of a folder of predicted label PNGs (official conventions, see module doc).

    Args:
        gt_root: DAVIS root, its ``Annotations`` folder, or a folder of ``<seq>/*.png`` ground-truth folders.
        pred_root: folder of ``<seq>/<frame>.png`` predictions ('P' or 'L' PNGs of labels 0..K).
        sequences: names to evaluate, in this order; default: every sub-folder of the GT folder, sorted.
        processes: worker processes over sequences; 1 = in this process; default: min(CPUs, sequences).
        progress: show a tqdm bar over sequences.
        bound_th: boundary tolerance of F (official 0.008).

    Returns:
        :class:`EvalResult`.

    Raises:
        InputError: bad folders or PNGs (see module doc).
    """
    gt_dir = _resolve_gt_root(Path(gt_root))
    pred_dir = Path(pred_root)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder not found: {pred_dir}")
    if sequences is None:
        names = sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise InputError(f"no sequence folders in the ground-truth folder {gt_dir}")
    else:
        names = [sequences] if isinstance(sequences, str) else list(dict.fromkeys(sequences))
        if not names:
            raise InputError("empty list of sequences")
        missing_gt = [n for n in names if not (gt_dir / n).is_dir()]
        if missing_gt:
            raise InputError(f"sequence(s) not in the ground-truth folder {gt_dir}: {_short_list(missing_gt)}")
    missing_pred = [n for n in names if not (pred_dir / n).is_dir()]
    if missing_pred:
        raise InputError(f"sequence(s) missing in the predictions {pred_dir}: {_short_list(missing_pred)}")

    if processes is None:
        processes = min(os.cpu_count() or 1, len(names))
    if processes < 1:
        raise InputError(f"processes must be >= 1, got {processes}")
    logger.info("evaluating %d sequence(s) of %s against %s (%d process(es))", len(names), pred_dir, gt_dir,
                processes)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names), desc="J&F", unit="seq")
    try:
        results = []
        if processes == 1:
            for name in names:
                results.append(_evaluate_sequence(gt_dir, pred_dir, name, bound_th))
                if bar is not None:
                    bar.update()
        else:
            # spawn, not fork: forking a process that has started torch/OpenMP threads can hang or crash.
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=processes, initializer=_init_worker,
                                                        mp_context=ctx) as pool:
                futures = [pool.submit(_evaluate_sequence, gt_dir, pred_dir, n, bound_th) for n in names]
                try:
                    for fut in futures:  # input order, so the error raised is the first sequence's, every run
                        results.append(fut.result())
                        if bar is not None:
                            bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        if bar is not None:
            bar.close()
    result = EvalResult.from_sequences(results)
    logger.debug("J&F-Mean %.4f (J %.4f, F %.4f) over %d object(s)", result.jf_mean,
                result.global_metrics["J-Mean"], result.global_metrics["F-Mean"], len(result.objects))
    return result


def _init_worker() -> None:
    # One OpenCV thread per worker: the workers already use every core.
    cv2.setNumThreads(1)


def _resolve_gt_root(root: Path) -> Path:
    if not root.is_dir():
        raise InputError(f"ground-truth folder not found: {root}")
    for sub in (root / "Annotations" / "480p", root / "480p"):
        if sub.is_dir():
            return sub
    return root


def _short_list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_labels(path: Path, what: str) -> np.ndarray:
    """(H, W) uint8 labels of an 'L' or 'P' PNG."""
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise InputError(
                    f"{what} {path} is a mode {im.mode!r} image; label masks must be palette ('P') or grayscale "
                    "('L') PNGs whose pixel values are object labels"
                )
            return np.array(im)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err}") from err


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"


def _evaluate_sequence(gt_dir: Path, pred_dir: Path, name: str, bound_th: float) -> SequenceScores:
    """Per-frame J and F of one sequence (runs in a worker process)."""
    gt_files = sorted((gt_dir / name).glob("*.png"))
    if len(gt_files) < 3:
        raise InputError(
            f"sequence {name!r}: {len(gt_files)} ground-truth PNG(s) in {gt_dir / name}; at least 3 are needed "
            "(the first and last frames are not counted)"
        )
    first = _read_labels(gt_files[0], "ground-truth frame")
    first[first == 255] = 0
    num_objects = int(first.max())
    if num_objects == 0:
        raise InputError(f"sequence {name!r}: no object in the first ground-truth frame {gt_files[0]}")

    counted = gt_files[1:-1]
    j = np.empty((num_objects, len(counted)), dtype=np.float64)
    f = np.empty_like(j)
    for t, gt_file in enumerate(counted):
        gt = _read_labels(gt_file, "ground-truth frame")
        if gt.shape != first.shape:
            raise InputError(
                f"sequence {name!r}: ground-truth frame {gt_file} is {_size(gt)}, but the first frame is "
                f"{_size(first)}"
            )
        gt[gt == 255] = 0
        pred_file = pred_dir / name / gt_file.name
        if not pred_file.is_file():
            raise InputError(f"sequence {name!r}, frame {gt_file.stem}: prediction not found: {pred_file}")
        pred = _read_labels(pred_file, "prediction")
        if pred.shape != gt.shape:
            raise InputError(
                f"sequence {name!r}, frame {gt_file.stem}: prediction {pred_file} is {_size(pred)} (WxH) but the "
                f"ground truth is {_size(gt)}"
            )
        top = int(pred.max())
        if top > num_objects:
            raise InputError(
                f"sequence {name!r}, frame {gt_file.stem}: prediction {pred_file} has label {top}, but the "
                f"sequence has {num_objects} object(s) (K = max label of the first ground-truth frame)"
            )
        j[:, t], f[:, t] = frame_scores(gt, pred, num_objects, bound_th=bound_th)
    logger.debug("%s: %d object(s), %d frame(s), J %.4f F %.4f", name, num_objects, len(counted), j.mean(), f.mean())
    return SequenceScores(name, tuple(p.stem for p in counted), j, f)
