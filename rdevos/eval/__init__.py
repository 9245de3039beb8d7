"""Evaluation: official-exact DAVIS J&F metrics, dataset evaluation and reports."""

from __future__ import annotations

from rdevos.eval.evaluate import EvalResult, evaluate_davis
from rdevos.eval.report import format_table, results_dict, write_official_csvs, write_results_json

__all__ = ["EvalResult", "evaluate_davis", "format_table", "results_dict", "write_official_csvs",
           "write_results_json"]
