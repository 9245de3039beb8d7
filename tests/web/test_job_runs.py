"""The web job runner over rdevos.segment_to_folder: 'both' from a start frame, progress across a resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdevos_web.jobs import Job, JobManager, JobStatus, RunSettings, WorkFolder
from tests.web.conftest import CLIP_FRAMES
from tests.web.test_jobs import _video_job as _job  # the same clip.mp4 job, first-frame mask
from tests.web.test_jobs import cancel_after, settings, work  # noqa: F401 - the same fixtures


def test_both_from_a_start_frame_covers_every_frame(work: WorkFolder, web_data: dict[str, Path],
                                                    settings: RunSettings) -> None:
    job = _job(work, web_data)
    job.set_annotation(6, np.asarray(Image.open(web_data["mask"])))  # "Start: this frame" on a correction
    manager = JobManager(work, settings)
    assert manager.submit(job.id, direction="both", start=6).total == CLIP_FRAMES
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE and info.done == info.total == CLIP_FRAMES
    assert sorted(p.stem for p in job.masks_dir.glob("*.png")) == job.frame_names
    manager.shutdown()


def test_progress_never_goes_back_across_a_resume(work: WorkFolder, web_data: dict[str, Path],
                                                  settings: RunSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(work, web_data)
    manager = JobManager(work, settings)
    seen: list[int] = []
    real_update = Job.update

    def update(self: Job, **changes: object):  # type: ignore[no-untyped-def]
        if "done" in changes and self.id == job.id:
            seen.append(int(changes["done"]))  # type: ignore[call-overload]
        return real_update(self, **changes)

    real_write = JobManager._write_result
    monkeypatch.setattr(Job, "update", update)
    cancel_after(manager, job.id, 5, monkeypatch)
    manager.submit(job.id)
    assert manager.wait(job.id).done == 5
    monkeypatch.setattr(JobManager, "_write_result", real_write)
    manager.submit(job.id)
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE and info.done == info.total == CLIP_FRAMES
    after = seen[seen.index(5):]
    assert after == sorted(after), seen  # the counter only goes up
    manager.shutdown()
