"""`rdevos eval`: results.json and --json hold exactly the Python API's numbers (full precision)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rdevos.cli import main
from rdevos.eval import evaluate_davis, results_dict
from rdevos.eval.evaluate import EvalResult, SequenceScores
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "data" / "jf-golden"
PRED = GOLDEN / "predictions" / "perturbed-b"


def _check_equal(data: dict, res: EvalResult) -> None:
    assert data["global"] == res.global_metrics  # == on floats: bit for bit
    assert [o["Sequence"] for o in data["objects"]] == [o.name for o in res.objects]
    for row, obj in zip(data["objects"], res.objects):
        assert (row["sequence"], row["object"]) == (obj.sequence, obj.object_id)
        assert {k: row[k] for k in obj.to_dict()} == obj.to_dict()
    assert list(data["sequences"]) == list(res.sequences)
    for name, scores in res.sequences.items():
        seq = data["sequences"][name]
        assert seq["frames"] == list(scores.frames)
        assert seq["J"] == scores.j.tolist() and seq["F"] == scores.f.tolist()
        objs = [o for o in res.objects if o.sequence == name]
        assert seq["J-Mean"] == float(np.mean([o.j_mean for o in objs]))
        assert seq["F-Mean"] == float(np.mean([o.f_mean for o in objs]))


def test_json_equals_the_python_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = evaluate_davis(GOLDEN / "davis", PRED, processes=1)
    out = tmp_path / "scores"
    assert main(["-q", "eval", "--gt", str(GOLDEN / "davis"), "--pred", str(PRED), "-o", str(out), "--json",
                 "--processes", "1", "--split", "train"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    written = json.loads((out / "results.json").read_text())
    assert printed == written and written["split"] == "train" and written["task"] == "semi-supervised"
    _check_equal(written, res)
    assert sorted(p.name for p in out.iterdir()) == ["global_results-train.csv", "per-sequence_results-train.csv",
                                                     "results.json"]
    # more digits than the CSVs: the official full-precision numbers to 1e-6
    assert abs(written["global"]["J&F-Mean"] - 0.784110) < 1e-6 and written["global"]["J&F-Mean"] != 0.784
    # without --json: the table and one 'wrote' line, results.json next to the CSVs (default: --pred's copy)
    pred = tmp_path / "pred"
    pred.mkdir()
    for seq in PRED.iterdir():
        (pred / seq.name).mkdir()
        for f in seq.iterdir():
            (pred / seq.name / f.name).write_bytes(f.read_bytes())
    assert main(["-q", "eval", "--gt", str(GOLDEN / "davis"), "--pred", str(pred), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "J&F-Mean" in text and text.count("wrote ") == 1 and "results.json" in text
    _check_equal(json.loads((pred / "results.json").read_text()), res)


def test_nan_is_null() -> None:
    scores = SequenceScores("s", ("00001",), np.array([[math.nan]]), np.array([[0.5]]))
    data = results_dict(EvalResult.from_sequences([scores]))
    assert data["objects"][0]["J-Mean"] is None and data["sequences"]["s"]["J"] == [[None]]
    json.dumps(data, allow_nan=False)  # strict JSON
