"""Reports of a J&F evaluation: the official DAVIS CSV files and a console table."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rdevos.eval.evaluate import GLOBAL_COLUMNS, OBJECT_COLUMNS, EvalResult

__all__ = ["format_table", "write_official_csvs", "results_dict", "write_results_json", "RESULTS_JSON"]

#: File name of the full-precision results written next to the official CSVs.
RESULTS_JSON = "results.json"

logger = logging.getLogger(__name__)


def _fmt3(value: float) -> str:
    # What pandas' to_csv(float_format="%.3f") writes: NaN becomes an empty field.
    return "" if math.isnan(value) else "%.3f" % value


def write_official_csvs(result: EvalResult, out_dir: str | os.PathLike[str], split: str = "val") -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` as the official toolkit does.

    Same columns, row order, 3-decimal values and ``\\n`` line endings as ``evaluation_method.py`` (pandas
    ``to_csv(float_format="%.3f", index=False)`` on Linux), byte for byte.

    Args:
        result: from :func:`~rdevos.eval.evaluate.evaluate_davis`.
        out_dir: folder to write into (created if needed); existing files are overwritten.
        split: the DAVIS set name used in the file names.

    Returns:
        (global CSV path, per-sequence CSV path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    global_path = out / f"global_results-{split}.csv"
    seq_path = out / f"per-sequence_results-{split}.csv"
    with open(global_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GLOBAL_COLUMNS)
        writer.writerow([_fmt3(result.global_metrics[c]) for c in GLOBAL_COLUMNS])
    with open(seq_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("Sequence", "J-Mean", "F-Mean"))
        writer.writerows((o.name, _fmt3(o.j_mean), _fmt3(o.f_mean)) for o in result.objects)
    logger.debug("wrote %s and %s", global_path, seq_path)
    return global_path, seq_path


def _num(value: float) -> float | None:
    """A float as JSON keeps it (``repr``, so it reads back bit for bit); NaN becomes ``null``."""
    return None if math.isnan(value) else float(value)


def results_dict(result: EvalResult, split: str = "val") -> dict[str, Any]:
    """All numbers of an evaluation at full precision, as plain JSON types.

    Layout::

        {"format": "rdevos-davis-eval", "version": 1, "task": "semi-supervised", "split": ...,
         "global": {"J&F-Mean": ..., "J-Mean": ..., ...},                      # GLOBAL_COLUMNS
         "sequences": {"<seq>": {"J&F-Mean", "J-Mean", "F-Mean": means over the sequence's objects,
                                 "frames": [counted frame ids], "J": [[per frame] per object], "F": [...]}},
         "objects": [{"Sequence": "<seq>_<k>", "sequence": "<seq>", "object": k, "J-Mean": ..., ...}]}

    ``global`` and ``objects`` are the official numbers (``objects`` in the official row order); NaN is
    ``null``. Floats are written with ``repr``, so ``json.load`` gives back exactly the numbers of ``result``.
    """
    sequences: dict[str, Any] = {}
    for name, scores in result.sequences.items():
        objs = [o for o in result.objects if o.sequence == name]
        j_mean = float(np.mean([o.j_mean for o in objs])) if objs else math.nan
        f_mean = float(np.mean([o.f_mean for o in objs])) if objs else math.nan
        sequences[name] = {
            "J&F-Mean": _num((j_mean + f_mean) / 2.0), "J-Mean": _num(j_mean), "F-Mean": _num(f_mean),
            "frames": list(scores.frames),
            "J": [[_num(v) for v in row] for row in scores.j.tolist()],
            "F": [[_num(v) for v in row] for row in scores.f.tolist()],
        }
    objects = [{"Sequence": o.name, "sequence": o.sequence, "object": o.object_id,
                **{k: _num(v) for k, v in o.to_dict().items()}} for o in result.objects]
    return {"format": "rdevos-davis-eval", "version": 1, "task": "semi-supervised", "split": split,
            "global": {c: _num(result.global_metrics[c]) for c in GLOBAL_COLUMNS},
            "sequences": sequences, "objects": objects}


def write_results_json(result: EvalResult, out_dir: str | os.PathLike[str], split: str = "val") -> Path:
    """Write :func:`results_dict` as ``<out_dir>/results.json`` (created if needed, overwritten).

    Returns:
        The path written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_JSON
    path.write_text(json.dumps(results_dict(result, split), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    logger.debug("wrote %s", path)
    return path


def format_table(result: EvalResult) -> str:
    """Readable summary: the global numbers, then one row per object (3 decimals)."""
    g_width = max(len(c) for c in GLOBAL_COLUMNS)
    lines = [
        "  ".join(f"{c:>{g_width}}" for c in GLOBAL_COLUMNS),
        "  ".join(f"{result.global_metrics[c]:>{g_width}.3f}" for c in GLOBAL_COLUMNS),
        "",
    ]
    name_width = max([len("Sequence")] + [len(o.name) for o in result.objects])
    col_width = max(len(c) for c in OBJECT_COLUMNS)
    lines.append(f"{'Sequence':<{name_width}}  " + "  ".join(f"{c:>{col_width}}" for c in OBJECT_COLUMNS))
    for o in result.objects:
        values = o.to_dict()
        lines.append(f"{o.name:<{name_width}}  " + "  ".join(f"{values[c]:>{col_width}.3f}" for c in OBJECT_COLUMNS))
    return "\n".join(lines)
