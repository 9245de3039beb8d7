"""Box and click prompts -> a frame's mask (a fake predictor for the logic, the shipped model once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.masks import write_mask
from rdevos_web.jobs import Job, Upload, WorkFolder
from rdevos_web.prompting import PromptService
from tests.web.conftest import CLIP_SIZE

W, H = CLIP_SIZE


class BoxPredictor:
    """The box itself, minus a square around each negative click, plus one around each positive click."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, list[tuple[float, float, bool]], object]] = []

    def predict(self, image: np.ndarray, box: object = None, points: object = (), prev_mask: object = None
                ) -> np.ndarray:
        self.calls.append((box, list(points), prev_mask))  # type: ignore[arg-type]
        h, w = image.shape[:2]
        m = np.zeros((h, w), bool) if prev_mask is None else np.asarray(prev_mask, bool).copy()
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)  # type: ignore[attr-defined]
            m[y0:y1, x0:x1] = True
        for x, y, pos in points:  # type: ignore[attr-defined]
            m[max(int(y) - 3, 0):int(y) + 4, max(int(x) - 3, 0):int(x) + 4] = pos
        return m


@pytest.fixture
def job(tmp_path: Path, web_data: dict[str, Path]) -> Job:
    work = WorkFolder(tmp_path / "work")
    return work.create_job([Upload(web_data["video"], "clip.mp4")])


def test_box_then_clicks_refine_one_object(job: Job) -> None:
    fake = BoxPredictor()
    service = PromptService(predictor=fake)
    job.add_object()
    job.add_object()
    state, changed = service.apply(job, None, 4, 1, box=(10, 10, 50, 40))
    labels = job.annotation(4)
    assert changed and labels is not None
    assert (labels[10:40, 10:50] == 1).all() and labels.sum() == 30 * 40
    assert job.annotated_frames() == [4]  # written at once
    state, changed = service.apply(job, state, 4, 1, point=(20, 20, False))
    assert changed and job.annotation(4)[20, 20] == 0 and fake.calls[-1][0] == (10, 10, 50, 40)  # the box stays
    assert fake.calls[-1][1] == [(20, 20, False)]
    # A click that changes nothing is not kept in the prompt (and writes nothing).
    version = job.info().version
    same, changed = service.apply(job, state, 4, 1, point=(45, 35, True))  # inside the mask already
    assert not changed and same == state and job.info().version == version
    # Another object on the same frame keeps object 1.
    _, _ = service.apply(job, state, 4, 2, box=(60, 50, 90, 80))
    labels = job.annotation(4)
    assert (labels[60:80, 60:90] == 2).all() and (labels[10:16, 10:50] == 1).all()
    # A new frame starts a new prompt: a click alone with no mask there needs a positive click.
    with pytest.raises(InputError, match="minus click"):
        service.apply(job, state, 5, 1, point=(5, 5, False))
    # Clicks without a box refine the current mask (prev_mask).
    _, _ = service.apply(job, None, 4, 2, point=(100, 30, True))
    assert fake.calls[-1][0] is None and fake.calls[-1][2] is not None and job.annotation(4)[30, 100] == 2


def test_a_prompt_on_a_result_changes_only_its_object(job: Job) -> None:
    """A box for object 2 on a frame that shows a run's result: object 1's result stays a result there."""
    job.add_object()
    job.add_object()
    result = np.zeros((H, W), np.uint8)
    result[5:30, 5:40] = 1
    result[50:80, 100:150] = 2
    job.masks_dir.mkdir()
    write_mask(job.masks_dir / f"{job.frame_names[3]}.png", result)
    PromptService(predictor=BoxPredictor()).apply(job, None, 3, 2, box=(60, 40, 90, 70))
    assert job.annotation_summary() == {3: [2]}  # the user mask annotates object 2 only
    shown, what = job.shown(3)
    assert what == "your mask over the result" and shown is not None
    assert (shown[5:30, 5:40] == 1).all()  # object 1: the result
    assert (shown[40:70, 60:90] == 2).all() and not (shown[50:80, 100:150] == 2).any()  # object 2: the box
    assert job.delete_object(2) and job.annotated_frames() == []  # nothing of object 1 became a user mask
    assert (job.shown(3)[0] == np.where(result == 2, 0, result)).all()


def test_an_empty_prompt_changes_nothing(job: Job) -> None:
    class Empty:
        def predict(self, image: np.ndarray, *a: object) -> np.ndarray:
            return np.zeros(image.shape[:2], bool)

    job.add_object()
    with pytest.raises(InputError, match="empty mask"):
        PromptService(predictor=Empty()).apply(job, None, 0, 1, box=(1, 1, 20, 20))
    assert job.annotated_frames() == []


def test_the_shipped_prompt_model_is_loaded_once(job: Job, web_data: dict[str, Path]) -> None:
    service = PromptService(device="cpu")
    mask = np.asarray(Image.open(web_data["mask"])) > 0
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    job.add_object()
    service.apply(job, None, 0, 1, box=box)
    labels = job.annotation(0)
    assert labels is not None
    inter, union = ((labels == 1) & mask).sum(), ((labels == 1) | mask).sum()
    assert inter / union > 0.5
    assert service.predictor() is service.predictor()
