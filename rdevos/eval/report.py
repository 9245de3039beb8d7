"""Reports of a J&F evaluation: the official DAVIS CSV files and a console table."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

from rdevos.eval.evaluate import GLOBAL_COLUMNS, OBJECT_COLUMNS, EvalResult

__all__ = ["format_table", "write_official_csvs"]

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
    logger.info("wrote %s and %s", global_path, seq_path)
    return global_path, seq_path


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
