"""J&F against the official davis2017-evaluation numbers of the golden set (tests/data/jf-golden, see its README)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.eval.evaluate import GLOBAL_COLUMNS, OBJECT_COLUMNS, EvalResult, evaluate_davis
from rdevos.eval.metrics import (
    bound_pixels,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    disk,
    frame_scores,
    seg2bmap,
)
from rdevos.eval.report import format_table, write_official_csvs

REPO = Path(__file__).resolve().parents[2]
#: The bundled copy of shared/data/jf-golden without its placeholder JPEGs (which no evaluation reads).
GOLDEN = REPO / "tests" / "data" / "jf-golden"
GT_ROOT = GOLDEN / "davis" / "Annotations" / "480p"
METHODS = ("perturbed-a", "perturbed-b")
TOL = 1e-6

needs_golden = pytest.mark.skipif(not GT_ROOT.is_dir(), reason=f"J&F golden set missing from the checkout: {GOLDEN}")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _labels(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def golden_results() -> dict[str, EvalResult]:
    if not GT_ROOT.is_dir():
        pytest.skip(f"J&F golden set not found at {GOLDEN}")
    return {m: evaluate_davis(GOLDEN / "davis", GOLDEN / "predictions" / m, processes=1) for m in METHODS}


# ---------------------------------------------------------------------------------------------------------------
# Golden numbers


@needs_golden
@pytest.mark.parametrize("method", METHODS)
def test_global_full_precision(golden_results: dict[str, EvalResult], method: str) -> None:
    (expected,) = _read_csv(GOLDEN / "expected" / method / "global_full_precision.csv")
    got = golden_results[method].global_metrics
    assert tuple(expected) == GLOBAL_COLUMNS == tuple(got)
    for col in GLOBAL_COLUMNS:
        assert abs(got[col] - float(expected[col])) <= TOL, col


@needs_golden
@pytest.mark.parametrize("method", METHODS)
def test_per_object_full_precision(golden_results: dict[str, EvalResult], method: str) -> None:
    expected = _read_csv(GOLDEN / "expected" / method / "per_object_full_precision.csv")
    objects = golden_results[method].objects
    assert [o.name for o in objects] == [row["Sequence"] for row in expected]
    for obj, row in zip(objects, expected):
        assert (obj.sequence, obj.object_id) == (row["seq"], int(row["object"]))
        for col, value in obj.to_dict().items():
            assert abs(value - float(row[col])) <= TOL, (obj.name, col)


@needs_golden
@pytest.mark.parametrize("method", METHODS)
def test_per_frame(golden_results: dict[str, EvalResult], method: str) -> None:
    rows = _read_csv(GOLDEN / "expected" / method / "per_frame.csv")
    expected: dict[str, dict[int, dict[int, tuple[float, float]]]] = {}
    for r in rows:
        expected.setdefault(r["seq"], {}).setdefault(int(r["frame"]), {})[int(r["object"])] = (
            float(r["J"]),
            float(r["F"]),
        )
    assert len(rows) == 180
    for seq, frames in expected.items():
        gt_files = sorted((GT_ROOT / seq).glob("*.png"))
        assert [int(p.stem) for p in gt_files] == sorted(frames) == list(range(20))
        num_objects = int(_labels(gt_files[0]).max())
        for gt_file in gt_files:  # all 20 frames, also the uncounted first and last
            gt = _labels(gt_file)
            pred = _labels(GOLDEN / "predictions" / method / seq / gt_file.name)
            j, f = frame_scores(gt, pred, num_objects)
            want = frames[int(gt_file.stem)]
            assert sorted(want) == list(range(1, num_objects + 1))
            for k, (want_j, want_f) in want.items():
                assert abs(j[k - 1] - want_j) <= TOL, (seq, gt_file.stem, k, "J")
                assert abs(f[k - 1] - want_f) <= TOL, (seq, gt_file.stem, k, "F")
        # the evaluation keeps exactly the counted frames 1..18
        scores = golden_results[method].sequences[seq]
        assert scores.frames == tuple(f"{i:05d}" for i in range(1, 19))
        want_j = np.array([[frames[t][k][0] for t in range(1, 19)] for k in range(1, num_objects + 1)])
        want_f = np.array([[frames[t][k][1] for t in range(1, 19)] for k in range(1, num_objects + 1)])
        np.testing.assert_allclose(scores.j, want_j, rtol=0, atol=TOL)
        np.testing.assert_allclose(scores.f, want_f, rtol=0, atol=TOL)


@needs_golden
@pytest.mark.parametrize("method", METHODS)
def test_official_csvs_byte_identical(golden_results: dict[str, EvalResult], method: str, tmp_path: Path) -> None:
    written = write_official_csvs(golden_results[method], tmp_path, split="train")
    for path in written:
        assert path.read_bytes() == (GOLDEN / "expected" / method / path.name).read_bytes(), path.name
    table = format_table(golden_results[method])
    assert "J&F-Mean" in table and "stroller_3" in table


@needs_golden
def test_processes_identical(golden_results: dict[str, EvalResult]) -> None:
    one = golden_results["perturbed-b"]
    two = evaluate_davis(GOLDEN / "davis", GOLDEN / "predictions" / "perturbed-b", processes=2)
    assert two.global_metrics == one.global_metrics
    assert two.objects == one.objects
    assert list(two.sequences) == list(one.sequences)
    for name, scores in one.sequences.items():
        assert two.sequences[name].frames == scores.frames
        np.testing.assert_array_equal(two.sequences[name].j, scores.j)
        np.testing.assert_array_equal(two.sequences[name].f, scores.f)


@needs_golden
def test_gt_root_layouts() -> None:
    pred = GOLDEN / "predictions" / "perturbed-a"
    roots = (GOLDEN / "davis", GOLDEN / "davis" / "Annotations", GT_ROOT)
    results = [evaluate_davis(r, pred, ["car-turn"], processes=1) for r in roots]
    assert results[0].global_metrics == results[1].global_metrics == results[2].global_metrics
    assert [o.name for o in results[0].objects] == ["car-turn_1"]


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


def test_disk_matches_skimage() -> None:
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(
        disk(2), [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    )
    assert disk(8.0).shape == (17, 17) and disk(8.0).dtype == np.uint8
    assert bound_pixels((480, 854)) == 8.0
    assert bound_pixels((480, 854), 3) == 3.0


def test_seg2bmap_border_is_not_boundary() -> None:
    seg = np.zeros((5, 6), dtype=bool)
    seg[2:, 3:] = True  # touches the bottom and right border
    b = seg2bmap(seg)
    assert not b[-1, 4:].any() and not b[3:, -1].any()
    assert b[1, 3] and b[2, 2] and b[1, 2]  # boundary is offset up/left, as in the official code
    assert not seg2bmap(np.ones((4, 4))).any()


def _reference_f(fg: np.ndarray, gt: np.ndarray, bound_th: float) -> float:
    """Plain transcription of the official f_measure (full-frame boundaries and dilations)."""
    radius = bound_pixels(fg.shape, bound_th)
    fg_b, gt_b = seg2bmap(fg), seg2bmap(gt)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), disk(radius))
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk(radius))
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = np.sum(fg_b * gt_dil) / float(n_fg), np.sum(gt_b * fg_dil) / float(n_gt)
    return 0 if p + r == 0 else 2 * p * r / (p + r)


def test_cropped_f_equals_full_frame() -> None:
    rng = np.random.default_rng(0)
    h, w = 40, 56
    for trial in range(60):
        masks = []
        for _ in range(2):
            m = np.zeros((h, w), dtype=bool)
            for _ in range(rng.integers(0, 3)):
                y, x = rng.integers(-5, h + 5), rng.integers(-5, w + 5)
                m[max(y, 0) : y + rng.integers(1, 20), max(x, 0) : x + rng.integers(1, 20)] = True
            masks.append(m)
        if trial == 0:
            masks[0][:] = True  # whole image: no boundary at all
        bound_th = (0.008, 0.05, 3, 2.5)[trial % 4]
        want = _reference_f(masks[0], masks[1], bound_th)
        assert db_eval_boundary(masks[1], masks[0], bound_th=bound_th) == want, trial
    stack_gt, stack_pred = np.stack([masks[0], masks[1]]), np.stack([masks[1], masks[1]])
    np.testing.assert_array_equal(
        db_eval_boundary(stack_gt, stack_pred), [_reference_f(masks[1], masks[0], 0.008), 1.0]
    )
    np.testing.assert_array_equal(db_eval_iou(stack_gt, stack_pred)[1], 1.0)


def test_special_cases() -> None:
    empty, obj = np.zeros((30, 30), np.uint8), np.zeros((30, 30), np.uint8)
    obj[5:15, 5:15] = 1
    assert db_eval_iou(empty, empty) == 1.0 and db_eval_boundary(empty, empty) == 1.0
    assert db_eval_iou(obj, empty) == 0.0 and db_eval_boundary(obj, empty) == 0.0
    assert db_eval_iou(empty, obj) == 0.0 and db_eval_boundary(empty, obj) == 0.0
    j, f = frame_scores(obj, empty, 2)  # object 1 missing; object 2 empty in both
    np.testing.assert_array_equal(j, [0.0, 1.0])
    np.testing.assert_array_equal(f, [0.0, 1.0])


def test_db_statistics() -> None:
    v = np.linspace(1.0, 0.0, 18)
    stats = db_statistics(v)
    assert stats.mean == pytest.approx(0.5)
    assert stats.recall == 9 / 18  # strictly > 0.5
    assert stats.decay == pytest.approx(np.mean(v[0:5]) - np.mean(v[13:18]))
    # the official uint8 bin edges wrap past 256 frames (decay NaN); ours stay right
    long = np.linspace(1.0, 0.0, 300)
    assert stats.decay > 0 and np.isfinite(db_statistics(long).decay)


# ---------------------------------------------------------------------------------------------------------------
# Bad input (the official code crashes, hangs or exits 0 without results on these)


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """5-frame copy of bear (GT and perturbed-a predictions): counted frames 00001..00003."""
    if not GT_ROOT.is_dir():
        pytest.skip(f"J&F golden set not found at {GOLDEN}")
    gt, pred = tmp_path / "gt" / "bear", tmp_path / "pred" / "bear"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i in range(5):
        shutil.copy(GT_ROOT / "bear" / f"{i:05d}.png", gt)
        shutil.copy(GOLDEN / "predictions" / "perturbed-a" / "bear" / f"{i:05d}.png", pred)
    return gt.parent, pred.parent


def test_bad_folders(small: tuple[Path, Path], tmp_path: Path) -> None:
    gt, pred = small
    with pytest.raises(InputError, match="ground-truth folder not found"):
        evaluate_davis(tmp_path / "nope", pred, processes=1)
    with pytest.raises(InputError, match="prediction folder not found"):
        evaluate_davis(gt, tmp_path / "nope", processes=1)
    (gt / "cat").mkdir()
    with pytest.raises(InputError, match=r"missing in the predictions.*'cat'"):
        evaluate_davis(gt, pred, processes=1)
    with pytest.raises(InputError, match=r"not in the ground-truth folder.*'dog'"):
        evaluate_davis(gt, pred, ["dog"], processes=1)


def test_first_and_last_prediction_not_read(small: tuple[Path, Path]) -> None:
    gt, pred = small
    want = evaluate_davis(gt, pred, processes=1).global_metrics
    (pred / "bear" / "00000.png").unlink()
    with Image.open(pred / "bear" / "00004.png") as im:
        im.resize((427, 240), Image.NEAREST).convert("RGB").save(pred / "bear" / "00004.png")
    assert evaluate_davis(gt, pred, processes=1).global_metrics == want


def test_mode_l_accepted(small: tuple[Path, Path]) -> None:
    gt, pred = small
    want = evaluate_davis(gt, pred, processes=1).global_metrics
    for p in (pred / "bear").glob("*.png"):
        Image.fromarray(_labels(p), mode="L").save(p)
    assert evaluate_davis(gt, pred, processes=1).global_metrics == want


def test_missing_counted_frame(small: tuple[Path, Path]) -> None:
    gt, pred = small
    (pred / "bear" / "00002.png").unlink()
    with pytest.raises(InputError, match=r"'bear', frame 00002: prediction not found: .*00002\.png"):
        evaluate_davis(gt, pred, processes=1)


def test_size_mismatch(small: tuple[Path, Path]) -> None:
    gt, pred = small
    path = pred / "bear" / "00002.png"
    with Image.open(path) as im:
        im.resize((427, 240), Image.NEAREST).save(path)
    with pytest.raises(InputError, match=r"'bear', frame 00002: .* is 427x240 .* ground truth is 854x480"):
        evaluate_davis(gt, pred, processes=1)


def test_label_above_k(small: tuple[Path, Path]) -> None:
    gt, pred = small
    path = pred / "bear" / "00003.png"
    labels = _labels(path)
    labels[:10, :10] = 2
    with Image.open(path) as im:
        out = Image.fromarray(labels, mode="P")
        out.putpalette(im.getpalette())
    out.save(path)
    # also through a worker process: the error must come back intact
    with pytest.raises(InputError, match=r"frame 00003: prediction .*00003\.png has label 2, .* 1 object"):
        evaluate_davis(gt, pred, processes=2)


def test_rgb_rejected(small: tuple[Path, Path]) -> None:
    gt, pred = small
    path = pred / "bear" / "00001.png"
    with Image.open(path) as im:
        im.convert("RGB").save(path)
    with pytest.raises(InputError, match=r"00001\.png is a mode 'RGB' image"):
        evaluate_davis(gt, pred, processes=1)
