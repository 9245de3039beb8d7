"""The job record (rdevos_web.store): versions, per-object edits, undo/redo, run settings, runs refusing edits, and
reading a job written by the previous version of the app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError
from rdevos.io.masks import write_mask
from rdevos_web.jobs import Job, JobManager, JobSettings, JobStatus, RunSettings, WorkFolder
from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE
from tests.web.test_jobs import _video_job as _job  # the same clip.mp4 job, first-frame mask
from tests.web.test_jobs import cancel_after, settings, work  # noqa: F401 - the same fixtures

W, H = CLIP_SIZE


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_every_edit_bumps_the_version_and_mask_edits_the_mask_version(work: WorkFolder,
                                                                      web_data: dict[str, Path]) -> None:
    job = _job(work, web_data)
    v = job.info().version
    obj = job.add_object("dog")
    assert job.info().version == v + 1 and job.info().mask_version < v + 1  # not a mask edit
    job.update_object(obj.id, name="dog")  # no change: nothing written
    assert job.info().version == v + 1
    assert job.edit_object_mask(3, obj.id, _box(10, 20, 10, 30))
    info = job.info()
    assert info.version == info.mask_version == v + 2
    assert not job.edit_object_mask(3, obj.id, _box(10, 20, 10, 30))  # the same mask: no edit
    assert job.info().version == v + 2
    job.set_settings(JobSettings(), direction="both")
    assert job.info().version == v + 3 and job.info().mask_version == v + 2


def test_an_object_edit_on_a_result_frame_keeps_the_other_objects_results(work: WorkFolder,
                                                                          web_data: dict[str, Path]) -> None:
    job = _job(work, web_data)
    job.add_object()
    result = np.zeros((H, W), np.uint8)
    result[30:80, 10:70] = 1
    result[0:20, 100:150] = 2
    job.masks_dir.mkdir()
    write_mask(job.masks_dir / "00005.png", result)
    assert job.edit_object_mask(5, 2, _box(40, 60, 100, 140))  # object 2 moved
    assert job.annotation_summary() == {0: [1], 5: [2]}
    shown, what = job.shown(5)
    assert what == "your mask over the result" and shown is not None
    assert (shown[30:80, 10:70] == 1).all() and (shown[40:60, 100:140] == 2).all() and not shown[0:20, 100:150].any()
    # The eraser takes object 1 off the frame: an id with no pixel says it is absent there.
    assert job.edit_object_mask(5, 1, np.zeros((H, W), bool))
    assert job.annotation_summary()[5] == [1, 2] and not (job.shown(5)[0] == 1).any()
    # Without a result, an object with no pixel left leaves nothing to say: the user mask goes.
    assert job.edit_object_mask(7, 2, _box(1, 5, 1, 5)) and job.edit_object_mask(7, 2, np.zeros((H, W), bool))
    assert 7 not in job.annotation_summary()
    with pytest.raises(InputError, match="no object 9"):
        job.edit_object_mask(5, 9, _box(1, 5, 1, 5))


def test_undo_and_redo(work: WorkFolder, web_data: dict[str, Path]) -> None:
    job = _job(work, web_data)
    job.forget_history()
    first = job.annotation(0)
    assert job.history() == (None, None) and job.undo() is None
    job.edit_object_mask(0, 1, _box(0, 10, 0, 10), what="brush stroke")
    job.remove_annotation(0)
    job.edit_object_mask(4, 1, _box(5, 15, 5, 15), what="box")
    assert job.history() == ("box on frame 4", None)
    assert job.undo() == 4 and job.annotation(4) is None
    assert job.undo() == 0 and (job.annotation(0) == np.where(_box(0, 10, 0, 10), 1, 0)).all()
    assert job.undo() == 0 and (job.annotation(0) == first).all()
    assert job.undo() is None
    assert job.redo() == 0 and job.redo() == 0 and job.annotation(0) is None
    job.edit_object_mask(2, 1, _box(1, 3, 1, 3), what="brush stroke")  # a new edit drops what could be redone
    assert job.history()[1] is None and job.redo() is None
    v = job.info().mask_version
    job.undo()
    assert job.info().mask_version > v  # undo is an edit too
    job.delete_object(1)  # cannot be undone: the history goes
    assert job.history() == (None, None)


def test_a_run_in_progress_refuses_mask_edits(work: WorkFolder, web_data: dict[str, Path]) -> None:
    job = _job(work, web_data)
    job.edit_object_mask(3, 1, _box(1, 9, 1, 9))
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        job.update(status=status)
        for edit in (lambda: job.edit_object_mask(2, 1, _box(1, 5, 1, 5)), lambda: job.remove_annotation(0),
                     lambda: job.set_annotation(1, np.asarray(Image.open(web_data["mask"]))),
                     job.undo, lambda: job.delete_object(1)):
            with pytest.raises(InputError, match="run of this job is in progress"):
                edit()
    job.update(status=JobStatus.DONE)
    assert job.undo() == 3


def test_run_settings_are_the_jobs(work: WorkFolder, web_data: dict[str, Path], settings: RunSettings) -> None:
    job = _job(work, web_data)
    manager = JobManager(work, settings)
    assert manager.job_settings(job) == JobSettings.of(settings)  # the server's, until the job has its own
    job.set_settings(manager.defaults, direction="backward", resolution=240)
    again = JobManager(WorkFolder(work.root), settings)  # another server on the folder
    assert again.job_settings(Job(job.folder)) == JobSettings(direction="backward", start="first mask",
                                                              model=settings.model, device="cpu", resolution=240)
    with pytest.raises(InputError, match="direction 'sideways'"):
        job.set_settings(manager.defaults, direction="sideways")
    with pytest.raises(InputError, match="processing size"):
        job.set_settings(manager.defaults, resolution=-3)
    info = manager.submit(job.id)  # Run takes the job's own settings
    assert (info.run["direction"], info.run["resolution"]) == ("backward", 240)  # type: ignore[index]
    manager.wait(job.id)
    manager.shutdown()


def test_a_job_of_the_previous_version_is_read(work: WorkFolder, web_data: dict[str, Path]) -> None:
    """job.json without objects/masks/settings and the object list in objects.json, as the app wrote them."""
    job = _job(work, web_data)
    d = json.loads(job.info_path.read_text())
    for key in ("objects", "masks", "settings", "version", "mask_version", "exports"):
        d.pop(key, None)
    job.info_path.write_text(json.dumps(d))
    job.objects_path.write_text(json.dumps([{"id": 1, "name": "bear", "colour": "#00ff00", "hidden": True}]))
    two = np.zeros((H, W), np.uint8)
    two[:10, :10] = 2
    write_mask(job.annotations_dir / "00004.png", two)
    again = Job(job.folder)
    assert [(o.id, o.name, o.colour, o.hidden) for o in again.objects()] == [
        (1, "bear", "#00ff00", True), (2, "object 2", again.objects()[1].colour, False)]
    assert again.annotation_summary() == {0: [1], 4: [2]}
    assert not job.objects_path.exists() and json.loads(job.info_path.read_text())["masks"] == {"0": [1], "4": [2]}


def test_a_run_from_a_corrected_frame_carries_the_other_objects_on(work: WorkFolder, web_data: dict[str, Path],
                                                                   settings: RunSettings) -> None:
    """Object 2 moved by hand on frame 6, which shows a result: a run from frame 6 starts from what the frame shows
    (object 1's result included, which the engine has no memory of there), and a stopped run continues with it."""
    job = _job(work, web_data)
    manager = JobManager(work, settings)
    manager.wait(manager.submit(job.id).id)
    job.add_object()
    assert job.edit_object_mask(6, 2, _box(0, 20, 120, 160))
    assert job.annotation_summary()[6] == [2]
    info = manager.submit(job.id, start=6)
    assert info.run["seeds"] == {"6": [1, 2]} and info.total == CLIP_FRAMES - 6  # type: ignore[index]
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE
    for i in range(6, CLIP_FRAMES):
        labels = job.result(i)
        assert labels is not None and 1 in labels and 2 in labels, i
    assert not info.results_stale
    job.edit_object_mask(6, 2, _box(0, 20, 100, 140))
    assert job.info().results_stale
    manager.shutdown()


def test_a_restarted_server_continues_with_the_jobs_settings(work: WorkFolder, web_data: dict[str, Path],
                                                             settings: RunSettings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped with settings other than the server's defaults continues exactly after a restart (it used to
    start again: the page's controls came back with the defaults)."""
    job = _job(work, web_data)
    first = JobManager(work, settings)
    job.set_settings(first.defaults, resolution=64, direction="both")
    cancel_after(first, job.id, 4, monkeypatch)
    first.submit(job.id)
    assert first.wait(job.id).done == 4
    first.shutdown()
    monkeypatch.undo()
    second = JobManager(WorkFolder(work.root), settings)  # a new server: its defaults are native size, forward
    info = second.submit(job.id)
    assert info.run["resume"] and info.run["resolution"] == 64  # type: ignore[index]
    info = second.wait(job.id)
    assert info.status is JobStatus.DONE and int(info.message.split()[1]) < CLIP_FRAMES  # continued
    second.shutdown()
