"""What the page says: status lines, plurals, upload pre-checks (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gradio")

from rdevos_web.app import _App  # noqa: E402
from rdevos_web.jobs import JobInfo, JobManager, JobStatus, WorkFolder  # noqa: E402
from rdevos_web.prompting import PromptService  # noqa: E402
from rdevos_web.views import playback_frame, singular, status_text  # noqa: E402


def _info(**kw: object) -> JobInfo:
    return JobInfo(id="20260101-000000-abcdef", name="x", created=0.0, num_frames=10, height=9, width=16, fps=24.0,
                   **kw)  # type: ignore[arg-type]


def test_status_says_frame_not_frames_for_one() -> None:
    assert status_text(_info(status=JobStatus.DONE, done=1, total=1, message="segmented 1 frames in 0.1 s")) == (
        "**done** · 1 / 1 frame · segmented 1 frame in 0.1 s")
    assert singular("the server stopped after 1 frames; 11 frames; 0.1 frames/s") == (
        "the server stopped after 1 frame; 11 frames; 0.1 frames/s")


def test_done_with_frames_missing_is_flagged() -> None:
    text = status_text(_info(status=JobStatus.DONE, done=4, total=10, message="segmented 4 frames"))
    assert "6 of the 10 frames this run was to segment have no result" in text
    assert "warning" not in status_text(_info(status=JobStatus.DONE, done=10, total=10))


def test_upload_precheck_refuses_like_the_browser(tmp_path: Path) -> None:
    work = WorkFolder(tmp_path / "w", max_upload_bytes=2**20)
    app = _App(work, JobManager(work), PromptService())
    assert "not an accepted file type" in app.check_upload([{"name": "notes.txt", "size": 5}])
    assert "'big.mp4' is too large (2.0 MB)" in app.check_upload([{"name": "big.mp4", "size": 2 * 2**20}])
    assert app.check_upload([{"name": "../../clip.mp4", "size": 10}]) == "Uploading clip.mp4…"


def test_playback_keeps_the_video_frame_rate() -> None:
    """Playback shows the frame of the video's own clock: frames the page could not draw in time are skipped."""
    assert playback_frame(3, 100.0, 100.0, 10.0, 50) == 3
    assert playback_frame(3, 100.0, 100.55, 10.0, 50) == 8  # 0.55 s at 10 fps
    assert playback_frame(0, 0.0, 1.0, 29.97, 50) == 29
    assert playback_frame(0, 0.0, 60.0, 25.0, 50) == 49  # stops at the last frame


def test_stale_results_are_said() -> None:
    info = _info(status=JobStatus.DONE, done=10, total=10, run={"mask_version": 3}, mask_version=5)
    assert "results out of date" in status_text(info)
    assert "out of date" not in status_text(_info(status=JobStatus.DONE, done=10, total=10, run={"mask_version": 5},
                                                  mask_version=5))
