"""Work folder, upload import and background jobs of the web app, without Gradio or a browser."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdevos.errors import InputError, ModelNotFoundError, RDEVOSError
from rdevos.hub import resolve_weights
from rdevos_web.exports import prepare
from rdevos_web.jobs import Job, JobManager, JobStatus, RunSettings, Upload, WorkFolder, safe_name
from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE

W, H = CLIP_SIZE


@pytest.fixture
def work(tmp_path: Path) -> WorkFolder:
    return WorkFolder(tmp_path / "work", max_upload_bytes=2 * 2**20, max_frames=50)


@pytest.fixture
def settings(web_data: dict[str, Path]) -> RunSettings:
    return RunSettings(model=str(web_data["ckpt"]), device="cpu", resolution=None)


@pytest.fixture
def held_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every run waits before writing a result until the event is set (10 s at most per frame), so a test can act
    while a job is running or queued; set again at teardown so no run is left waiting."""
    gate = threading.Event()
    real = JobManager._write_result

    def write(self: JobManager, job: Job, name: str, labels: np.ndarray) -> None:
        gate.wait(10)
        real(self, job, name, labels)

    monkeypatch.setattr(JobManager, "_write_result", write)
    yield gate
    gate.set()


def _video_job(work: WorkFolder, web_data: dict[str, Path], name: str = "clip.mp4") -> Job:
    job = work.create_job([Upload(web_data["video"], name)])
    job.set_annotation(0, Image.open(web_data["mask"]))
    return job


def cancel_after(manager: JobManager, job_id: str, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel ``job_id`` on ``manager`` right after its ``n``-th result is written (undo with ``monkeypatch``)."""
    real = JobManager._write_result
    count = {"n": 0}

    def write(self: JobManager, job: Job, name: str, labels: np.ndarray) -> None:
        real(self, job, name, labels)
        count["n"] += 1
        if count["n"] == n:
            manager.cancel(job_id)

    monkeypatch.setattr(JobManager, "_write_result", write)


def _results(job: Job) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(job.masks_dir.glob("*.png"))}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------------- uploads
def test_video_upload_becomes_a_job(work: WorkFolder, web_data: dict[str, Path]) -> None:
    job = work.create_job([Upload(web_data["video"], "../../my clip.mp4")])
    info = job.info()
    assert (info.num_frames, info.width, info.height, info.fps) == (CLIP_FRAMES, W, H, 10.0)
    assert info.name == "my_clip.mp4" and info.status is JobStatus.READY
    assert job.frame_names == [f"{i:05d}" for i in range(CLIP_FRAMES)]
    assert job.frame(3).shape == (H, W, 3)
    assert job.folder.parent == work.jobs_dir and [j.id for j in work.jobs()] == [job.id]


def test_zip_and_image_uploads(work: WorkFolder, web_data: dict[str, Path], tmp_path: Path) -> None:
    job = work.create_job([Upload(web_data["zip"], "frames.zip")])
    assert job.frame_names == [str(i) for i in range(CLIP_FRAMES)]  # natural order, folders flattened
    assert job.info().fps == 24.0
    files = [Upload(web_data["dir"] / f"f{i}.png", f"frame_{i}.png") for i in range(3)]
    job2 = work.create_job(files)
    assert job2.frame_names == ["frame_0", "frame_1", "frame_2"] and job2.info().name == "3 images"


def test_phone_photos_with_exif_rotation_upload_upright(work: WorkFolder, tmp_path: Path) -> None:
    """Portrait photos stored landscape with an EXIF orientation: the same-size check compares upright sizes, as
    FolderSource reads them (it compared stored sizes and refused every such upload, even its first frame)."""
    ups = []
    for i in range(3):
        p = tmp_path / f"IMG_{i}.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees to view
        Image.fromarray(np.full((40, 60, 3), 80 + 40 * i, np.uint8)).save(p, exif=exif.tobytes())
        ups.append(Upload(p, p.name))
    job = work.create_job(ups)
    assert (job.info().height, job.info().width) == (60, 40)
    exif = Image.Exif()
    exif[0x0112] = 1  # a fourth photo really landscape: still refused, naming it
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "IMG_3.jpg", exif=exif.tobytes())
    with pytest.raises(InputError, match="frame 'IMG_3.jpg' is 60x40 but the first frame is 40x60"):
        work.create_job([*ups, Upload(tmp_path / "IMG_3.jpg", "IMG_3.jpg")])


@pytest.mark.parametrize("name,content,message", [
    ("notes.mp4", b"just text\n" * 50, "'notes.mp4' is not a readable video file"),
    ("notes.txt", b"hello", "'notes.txt' is not an accepted file type"),
    ("frames.zip", b"PK but not a zip", "'frames.zip' is not a zip archive"),
    ("frame.png", b"not a png", "'frame.png' is not a readable image"),
    ("big.mp4", b"\0" * (2 * 2**20 + 1), "too large"),
], ids=["text-as-mp4", "txt", "fake-zip", "fake-png", "too-large"])
def test_bad_uploads_are_refused_with_a_message(work: WorkFolder, tmp_path: Path, name: str, content: bytes,
                                                message: str) -> None:
    f = tmp_path / "upload.bin"
    f.write_bytes(content)
    before = _files(tmp_path)
    with pytest.raises(InputError, match=message):
        work.create_job([Upload(f, name)])
    assert work.jobs() == [] and _files(tmp_path) == before  # nothing written, no half-imported job


def test_zip_slip_and_limits(work: WorkFolder, web_data: dict[str, Path], tmp_path: Path) -> None:
    png = (web_data["dir"] / "f0.png").read_bytes()
    for evil in ("../escape.png", "/abs/escape.png", "a/../../escape.png"):
        z = tmp_path / "evil.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("ok.png", png)
            zf.writestr(evil, png)
        with pytest.raises(InputError, match="points outside the archive; refused"):
            work.create_job([Upload(z, "evil.zip")])
    assert not list(tmp_path.rglob("escape.png")) and work.jobs() == []
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/1.png", png)
        zf.writestr("b/1.png", png)
    with pytest.raises(InputError, match="two frames are named '1'"):
        work.create_job([Upload(z, "dup.zip")])
    small = WorkFolder(tmp_path / "w2", max_frames=3)
    with pytest.raises(InputError, match="more than 3 frames"):
        small.create_job([Upload(web_data["video"], "clip.mp4")])
    with pytest.raises(InputError, match="not a mix"):
        work.create_job([Upload(web_data["video"], "clip.mp4"), Upload(web_data["dir"] / "f0.png", "f0.png")])
    assert not list(work.jobs_dir.iterdir())  # refused imports leave no staging folder


def test_names_and_ids_never_escape(work: WorkFolder) -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\x.mp4") == "x.mp4"
    assert safe_name("..") == "file" and safe_name(".hidden") == "hidden"
    for bad in ("../x", "20260101-000000-abcdef/../..", "", "x"):
        with pytest.raises(InputError):
            work.job(bad)


def test_annotations(work: WorkFolder, web_data: dict[str, Path]) -> None:
    job = _video_job(work, web_data)
    assert job.annotation_summary() == {0: [1]}
    two = np.zeros((H, W), np.uint8)
    two[10:30, 20:60] = 2
    two[50:70, 90:120] = 5
    assert job.set_annotation(6, two) == [2, 5]
    assert job.object_ids() == [1, 2, 5] and job.annotated_frames() == [0, 6]
    with pytest.raises(InputError, match="the video frames are 160x90"):
        job.set_annotation(1, np.ones((10, 10), np.uint8))
    with pytest.raises(InputError, match="no object"):
        job.set_annotation(1, np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="outside the video"):
        job.set_annotation(CLIP_FRAMES, two)
    assert job.remove_annotation(6) and not job.remove_annotation(6)


def test_sample_job(work: WorkFolder) -> None:
    job = work.create_sample_job()
    assert job.info().num_frames == 25 and job.annotation_summary() == {0: [1]}


def test_work_folder_is_used_by_one_server(tmp_path: Path) -> None:
    a = WorkFolder(tmp_path / "w")
    a.acquire_lock()
    with pytest.raises(RDEVOSError, match="another rdevos server"):
        WorkFolder(tmp_path / "w").acquire_lock()
    a.release_lock()
    WorkFolder(tmp_path / "w").acquire_lock()


# ---------------------------------------------------------------------------------------------------- jobs
def test_run_writes_results_and_exports(work: WorkFolder, web_data: dict[str, Path], settings: RunSettings) -> None:
    job = _video_job(work, web_data)
    manager = JobManager(work, settings)
    assert manager.submit(job.id).status is JobStatus.QUEUED
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE, info.message
    assert (info.done, info.total, info.last_frame) == (CLIP_FRAMES, CLIP_FRAMES, CLIP_FRAMES - 1)
    assert list(_results(job)) == job.frame_names and not job.state_path.exists()
    files = prepare(job)
    with zipfile.ZipFile(files["masks"]) as zf:
        assert zf.namelist() == [f"{n}.png" for n in job.frame_names]
        im = Image.open(io.BytesIO(zf.read("00003.png")))
        assert im.mode == "P" and im.size == CLIP_SIZE
    with av.open(str(files["overlay"])) as c:
        assert sum(1 for _ in c.decode(video=0)) == CLIP_FRAMES
    with zipfile.ZipFile(files["objects"]) as zf:
        assert len([n for n in zf.namelist() if n.startswith("1/")]) == CLIP_FRAMES
    assert all(job.folder in p.parents for p in _files(work.root))
    manager.shutdown()


def test_correction_propagates_from_its_frame(work: WorkFolder, web_data: dict[str, Path],
                                              settings: RunSettings) -> None:
    job = _video_job(work, web_data)
    manager = JobManager(work, settings)
    manager.wait(manager.submit(job.id).id)
    before = _results(job)
    fix = job.result(6)
    assert fix is not None
    fix = fix.copy()
    fix[:20, :40] = 3  # a new object appears at frame 6
    job.set_annotation(6, fix)
    with pytest.raises(InputError, match="frame 5 has no mask"):
        manager.submit(job.id, start=5)
    info = manager.submit(job.id, start=6)
    assert info.total == CLIP_FRAMES - 6
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE and info.done == CLIP_FRAMES - 6
    after = _results(job)
    assert all((after[k] == before[k]).all() for k in job.frame_names[:6])  # earlier frames untouched
    assert (after["00006"][:20, :40] == 3).all()
    manager.shutdown()


def test_cancel_then_continue_matches_a_clean_run(work: WorkFolder, web_data: dict[str, Path],
                                                 settings: RunSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _video_job(work, web_data, "clean.mp4")
    manager = JobManager(work, settings)
    manager.wait(manager.submit(clean.id).id)
    job = _video_job(work, web_data)
    cancel_after(manager, job.id, 6, monkeypatch)
    manager.submit(job.id)
    info = manager.wait(job.id)
    assert info.status is JobStatus.CANCELLED and info.done == 6 and info.message == "press Run to continue"
    assert len(_results(job)) == 6 and job.state_path.exists()
    monkeypatch.undo()
    assert manager.submit(job.id).run["resume"]  # type: ignore[index]
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE and info.done == CLIP_FRAMES
    assert "segmented" in info.message and int(info.message.split()[1]) < CLIP_FRAMES  # continued, not redone
    a, b = _results(clean), _results(job)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    manager.shutdown()


def test_restarted_server_lists_and_continues_jobs(work: WorkFolder, web_data: dict[str, Path],
                                                   settings: RunSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _video_job(work, web_data)
    other = work.create_job([Upload(web_data["zip"], "frames.zip")])
    first = JobManager(work, settings)
    cancel_after(first, job.id, 4, monkeypatch)
    first.submit(job.id)
    first.wait(job.id)
    first.shutdown()
    monkeypatch.undo()
    job.update(status=JobStatus.RUNNING)  # as a server killed mid-run leaves it
    # A new server on the same folder: lists both jobs, marks the dead run, and continues it on Run.
    work2 = WorkFolder(work.root)
    second = JobManager(work2, settings)
    assert {j.id for j in work2.jobs()} == {job.id, other.id}
    info = work2.job(job.id).info()
    assert info.status is JobStatus.INTERRUPTED and "server stopped" in info.message
    assert second.submit(job.id).run["resume"]  # type: ignore[index]
    assert second.wait(job.id).status is JobStatus.DONE
    assert len(_results(job)) == CLIP_FRAMES
    second.shutdown()


def test_jobs_run_one_at_a_time_and_queued_ones_cancel(work: WorkFolder, web_data: dict[str, Path],
                                                       settings: RunSettings, held_writes: threading.Event) -> None:
    a, b = _video_job(work, web_data, "a.mp4"), _video_job(work, web_data, "b.mp4")
    manager = JobManager(work, settings)
    manager.submit(a.id)
    info = manager.submit(b.id)
    assert info.status is JobStatus.QUEUED and "waiting" in info.message
    with pytest.raises(InputError, match="already queued or running"):
        manager.submit(b.id)
    assert manager.cancel(b.id).status is JobStatus.CANCELLED
    held_writes.set()
    assert manager.wait(a.id).status is JobStatus.DONE
    assert manager.wait(b.id).status is JobStatus.CANCELLED and not _results(b)
    manager.shutdown()


def test_run_errors_are_reported(work: WorkFolder, web_data: dict[str, Path], settings: RunSettings) -> None:
    job = work.create_job([Upload(web_data["video"], "clip.mp4")])
    manager = JobManager(work, settings)
    with pytest.raises(InputError, match="mask on at least one frame"):
        manager.submit(job.id)
    job.set_annotation(0, Image.open(web_data["mask"]))
    missing = str(web_data["dir"] / "missing.pt")
    with pytest.raises(InputError, match="checkpoint '.*missing.pt' does not exist"):  # before it is queued
        manager.submit(job.id, settings=RunSettings(model=missing, device="cpu"))
    assert job.info().status is JobStatus.READY
    with pytest.raises(InputError, match="device 'cuda' is not available"):
        manager.submit(job.id, settings=RunSettings(model=str(web_data["ckpt"]), device="cuda"))
    try:
        resolve_weights(None)
    except ModelNotFoundError:  # the embedded default model is not shipped yet: the message says what to do
        with pytest.raises(InputError, match="'Model'"):
            manager.submit(job.id, settings=RunSettings(model=None, device="cpu"))
    broken = web_data["dir"] / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    manager.submit(job.id, settings=RunSettings(model=str(broken), device="cpu"))  # found only by loading it
    info = manager.wait(job.id)
    manager.shutdown()
    assert info.status is JobStatus.FAILED and "broken.pt" in info.message
    assert json.loads(job.info_path.read_text())["status"] == "failed"


def test_server_stop_marks_the_running_job_interrupted(work: WorkFolder, web_data: dict[str, Path],
                                                       settings: RunSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _video_job(work, web_data)
    written = threading.Semaphore(0)
    gate = threading.Event()
    real = JobManager._write_result

    def write(self: JobManager, job_: Job, name: str, labels: np.ndarray) -> None:
        real(self, job_, name, labels)
        written.release()
        gate.wait(10)

    monkeypatch.setattr(JobManager, "_write_result", write)
    manager = JobManager(work, settings)
    manager.submit(job.id)
    assert written.acquire(timeout=30)  # the run has written its first frame
    stopper = threading.Thread(target=manager.shutdown)
    stopper.start()
    while not manager._stopping:  # shutdown() has asked the run to stop
        threading.Event().wait(0.01)
    gate.set()
    stopper.join(30)
    info = job.info()
    assert info.status is JobStatus.INTERRUPTED and "server stopped after 1 frames" in info.message


@pytest.mark.parametrize("direction,expected", [("backward", 6), ("both", CLIP_FRAMES)])
def test_backward_and_both_from_a_middle_frame(work: WorkFolder, web_data: dict[str, Path], settings: RunSettings,
                                               direction: str, expected: int) -> None:
    job = work.create_job([Upload(web_data["video"], "clip.mp4")])
    job.set_annotation(5, Image.open(web_data["mask"]))
    manager = JobManager(work, settings)
    assert manager.submit(job.id, direction=direction).total == expected
    info = manager.wait(job.id)
    assert info.status is JobStatus.DONE and info.done == expected
    assert list(_results(job)) == job.frame_names[:expected]
    manager.shutdown()


# ---------------------------------------------------------------------------------------------------- editor features
def test_object_list(work: WorkFolder, web_data: dict[str, Path]) -> None:
    job = _video_job(work, web_data)
    (first,) = job.objects()  # the uploaded mask's object is listed
    assert first.id == 1 and first.name == "object 1"
    second = job.add_object("dog")
    assert second.id == 2 and second.colour != first.colour
    assert job.update_object(2, name=" Rex ").name == "Rex"
    with pytest.raises(InputError, match="too close to the colour of 'object 1'"):
        job.update_object(2, colour=first.colour)
    with pytest.raises(InputError, match="not a colour"):
        job.update_object(2, colour="nope")
    assert job.update_object(2, colour="#00FFFF", hidden=True).colour == "#00ffff"
    again = Job(job.folder).objects()  # persisted in objects.json
    assert [(o.id, o.name, o.colour, o.hidden) for o in again] == [(1, "object 1", first.colour, False),
                                                                   (2, "Rex", "#00ffff", True)]
    with pytest.raises(InputError, match="no object 7"):
        job.update_object(7, name="x")


def test_delete_object_clears_its_masks_and_results(work: WorkFolder, web_data: dict[str, Path],
                                                    settings: RunSettings) -> None:
    job = _video_job(work, web_data)
    two = np.zeros((H, W), np.uint8)
    two[10:30, 20:60] = 2
    job.set_annotation(6, two)  # only object 2 on frame 6
    both = job.annotation(0)
    assert both is not None
    both = both.copy()
    both[:5, :5] = 2
    job.set_annotation(0, both)
    manager = JobManager(work, settings)
    assert manager.wait(manager.submit(job.id).id).status is JobStatus.DONE
    assert job.delete_object(2) > 0
    assert [o.id for o in job.objects()] == [1] and job.annotated_frames() == [0]  # frame 6 had only object 2
    assert all(2 not in r for r in _results(job).values())
    manager.shutdown()


def test_delete_job(work: WorkFolder, web_data: dict[str, Path], settings: RunSettings,
                    held_writes: threading.Event) -> None:
    job = _video_job(work, web_data)
    manager = JobManager(work, settings)
    manager.submit(job.id)
    with pytest.raises(InputError, match="cancel it before deleting"):
        manager.delete(job.id)
    manager.cancel(job.id)
    held_writes.set()
    manager.wait(job.id)
    manager.delete(job.id)
    assert work.jobs() == [] and not list(work.jobs_dir.iterdir())
    with pytest.raises(InputError):
        manager.delete(job.id)
    manager.shutdown()


def test_sample_button_reopens_the_sample_job(work: WorkFolder) -> None:
    job, reused = work.open_sample_job()
    again, reused2 = work.open_sample_job()
    assert (reused, reused2) == (False, True) and again.id == job.id and len(work.jobs()) == 1


def test_mask_refusals_name_the_file_not_the_server_path(work: WorkFolder, web_data: dict[str, Path],
                                                         tmp_path: Path) -> None:
    job = _video_job(work, web_data)
    rgb = tmp_path / "gradio" / "0123abcd" / "my mask.png"
    rgb.parent.mkdir(parents=True)
    photo = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(photo).save(rgb)
    broken = tmp_path / "gradio" / "broken.png"
    broken.write_bytes(b"not a png")
    small = tmp_path / "gradio" / "small.png"
    Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(small)
    for path, name, expected in [(rgb, "my mask.png", "my_mask.png"), (broken, "broken.png", "broken.png"),
                                 (small, "small.png", "10x10")]:
        with pytest.raises(InputError) as e:
            job.set_annotation_upload(1, path, name)
        msg = str(e.value)
        assert expected in msg and str(tmp_path) not in msg and "gradio" not in msg, msg
        assert "rdevos.io" not in msg and "PIL" not in msg and "fromarray" not in msg, msg
    assert job.set_annotation_upload(1, web_data["mask"], "mask.png") == [1]


def test_plural() -> None:
    from rdevos_web.jobs import plural

    assert plural(1, "frame") == "1 frame" and plural(0, "frame") == "0 frames" and plural(2, "job") == "2 jobs"


def test_both_from_a_correction_segments_every_frame(work: WorkFolder, web_data: dict[str, Path],
                                                     settings: RunSettings) -> None:
    job = _video_job(work, web_data)  # mask on frame 0
    job.set_annotation(6, Image.open(web_data["mask"]))
    manager = JobManager(work, settings)
    manager.submit(job.id, direction="both", start=6)
    info = manager.wait(job.id)
    manager.shutdown()
    assert info.status is JobStatus.DONE
    assert list(_results(job)) == job.frame_names and info.done == CLIP_FRAMES
