"""The web app end to end in a real headless Chromium: upload, draw, run, watch, fix, download; bad uploads."""

from __future__ import annotations

import io
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE, Server, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, LocatorAssertions, Page

Shot = Callable[["Page", str], Path]

pytestmark = pytest.mark.timeout(180)


def _expect(locator: Locator) -> LocatorAssertions:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # one shared CPU core: server, model and browser take turns
    return expect(locator)


def _set_frame(pg: Page, index: int) -> None:
    box = pg.locator("#frame input[type=number]")
    box.fill(str(index))
    box.press("Enter")
    _expect(pg.locator("#canvas")).to_contain_text(f"Frame {index} ")


def _at(pg: Page, fx: float, fy: float) -> tuple[float, float]:
    """Screen position of the point (fx, fy) of the frame (fractions of its width and height) on the canvas."""
    img = pg.locator("#canvas img")
    _expect(img).to_be_visible()
    g = img.evaluate("""im => { const r = im.getBoundingClientRect();
        const s = Math.min(r.width / im.naturalWidth, r.height / im.naturalHeight);
        return [r.left + (r.width - im.naturalWidth * s) / 2, r.top + (r.height - im.naturalHeight * s) / 2,
                im.naturalWidth * s, im.naturalHeight * s]; }""")
    return g[0] + g[2] * fx, g[1] + g[3] * fy


def _drag(pg: Page, a: tuple[float, float], b: tuple[float, float]) -> None:
    """Drag on the canvas from frame point ``a`` to ``b`` (a box with the box tool, a stroke with the brush)."""
    x0, y0 = _at(pg, *a)
    x1, y1 = _at(pg, *b)
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    pg.mouse.move((x0 + x1) / 2, (y0 + y1) / 2)
    pg.mouse.move(x1, y1)
    pg.mouse.up()


def _click(pg: Page, fx: float, fy: float, *, negative: bool = False) -> None:
    x, y = _at(pg, fx, fy)
    if negative:
        pg.keyboard.down("Shift")
    pg.mouse.click(x, y)
    if negative:
        pg.keyboard.up("Shift")


def _message(pg: Page, text: str | re.Pattern[str], timeout: float = 30_000) -> None:
    _expect(pg.locator("#message")).to_contain_text(text, timeout=timeout)


def _canvas_frame_fits(pg: Page) -> None:
    """The whole frame is on screen: not cut off, not zoomed (the image keeps its aspect inside the canvas)."""
    img = pg.locator("#canvas img")
    fit = img.evaluate("""im => { const r = im.getBoundingClientRect();
        const c = document.querySelector('#canvas').getBoundingClientRect();
        const s = Math.min(r.width / im.naturalWidth, r.height / im.naturalHeight);
        return {inside: r.left >= c.left - 1 && r.right <= c.right + 1 && r.top >= c.top - 1
                        && r.bottom <= c.bottom + 1,
                fit: getComputedStyle(im).objectFit, shown: [im.naturalWidth * s, im.naturalHeight * s],
                box: [r.width, r.height]}; }""")
    assert fit["inside"] and fit["fit"] == "contain", fit
    assert fit["shown"][0] <= fit["box"][0] + 1 and fit["shown"][1] <= fit["box"][1] + 1, fit
    assert max(fit["shown"][0] / fit["box"][0], fit["shown"][1] / fit["box"][1]) > 0.98, fit  # fills one side


def _job_ids(server: Server) -> set[str]:
    return {p.name for p in (server.work / "jobs").iterdir() if (p / "job.json").exists()}


def _download(pg: Page, selector: str, dest: Path) -> Path:
    with pg.expect_download() as dl:
        pg.click(selector)
    dl.value.save_as(dest)
    return dest


def _outside_work(server: Server) -> set[Path]:
    """Every file under the server's temporary root except the work folder."""
    root = server.work.parent
    return {p for p in root.rglob("*") if server.work not in p.parents and p != server.work}


def _bear_box(web_data: dict[str, Path]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The bounding box of the clip's object (fractions of the frame), from its mask."""
    m = np.asarray(Image.open(web_data["mask"])) > 0
    ys, xs = np.nonzero(m)
    h, w = m.shape
    return (xs.min() / w, ys.min() / h), ((xs.max() + 1) / w, (ys.max() + 1) / h)


def test_box_prompt_run_fix_download(page: Page, server: Server, web_data: dict[str, Path], shot: Shot,
                                     tmp_path: Path) -> None:
    pg = page
    expect = _expect
    # 1. Upload a real clip (mp4); drag a box around the bear: the mask appears (and is saved) at once.
    pg.locator("#upload input[type=file]").set_input_files(str(web_data["video"]))
    _message(pg, f"{CLIP_FRAMES} frames of {CLIP_SIZE[0]}x{CLIP_SIZE[1]}")
    expect(pg.locator("#canvas img")).to_be_visible()
    _canvas_frame_fits(pg)
    expect(pg.locator("#preview img")).to_have_count(0)  # a new job: no preview of another job's run
    a, b = _bear_box(web_data)
    _drag(pg, a, b)
    _message(pg, "Box prompt for object 1 on frame 0")
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1)")
    expect(pg.locator("#canvas")).to_contain_text("Frame 0 (00000) · your mask")
    expect(pg.locator("#object-list")).to_contain_text("1 · object 1")
    _click(pg, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2)  # + click inside
    _message(pg, "Added to object 1 on frame 0")
    _click(pg, a[0] + (b[0] - a[0]) * 0.1, a[1] + (b[1] - a[1]) * 0.9, negative=True)  # - click: background
    _message(pg, "Removed from object 1 on frame 0")
    job_id = pg.url.split("job=")[1].split("&")[0]
    ann = np.asarray(Image.open(server.work / "jobs" / job_id / "annotations" / "00000.png"))
    truth = np.asarray(Image.open(web_data["mask"])) > 0
    assert ((ann == 1) & truth).sum() / ((ann == 1) | truth).sum() > 0.5  # the prompt model found the bear
    shot(pg, "01-box-prompt")
    # 2. Run in the background; the status shows progress, then completion; the timeline marks the results.
    pg.click("#run")
    expect(pg.locator("#status")).to_contain_text(re.compile("running|done"))
    shot(pg, "02-running")
    expect(pg.locator("#status")).to_contain_text(f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames", timeout=60_000)
    expect(pg.locator("#timeline")).to_contain_text(f"{CLIP_FRAMES} / {CLIP_FRAMES} with results")
    # The job lives on the server: a reload reopens this browser's job with its results.
    pg.reload()
    _message(pg, "Reopened your job clip.mp4")
    expect(pg.locator("#status")).to_contain_text(f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    # 3. Go to frame 6 on the timeline and fix it: a new object, painted with the brush, then run from there.
    pg.locator("#rd-tl [data-frame='6']").click()
    expect(pg.locator("#canvas")).to_contain_text("Frame 6 (00006) · result")
    pg.click("#obj-add")
    _message(pg, "Added object 2")
    pg.get_by_role("radio", name="Brush").check()
    saved = pg.evaluate("Date.now()")
    _drag(pg, (0.45, 0.4), (0.6, 0.45))
    _message(pg, "Painted object 2 on frame 6")
    took = (pg.evaluate("Date.now()") - saved) / 1000
    assert took < 8, f"a brush stroke took {took:.1f} s to save and show"  # was 11-13 s with the old editor
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1); frame 6 (object 2)")  # only its object
    pg.get_by_label("this frame").check()
    pg.click("#run")
    expect(pg.locator("#status")).to_contain_text("done · 4 / 4 frames", timeout=60_000)  # frames 6..9
    shot(pg, "03-fixed")
    # 4. Downloads.
    pg.click("#prepare")
    expect(pg.locator("#dl-masks")).to_be_visible(timeout=60_000)
    expect(pg.locator("#message")).not_to_contain_text(str(server.work))  # no server paths on the page
    shot(pg, "04-downloads")
    masks = _download(pg, "#dl-masks", tmp_path / "masks.zip")
    with zipfile.ZipFile(masks) as zf:
        names = sorted(zf.namelist())
        assert names == [f"{i:05d}.png" for i in range(CLIP_FRAMES)]  # one palette PNG per frame
        labels = {}
        for n in names:
            im = Image.open(io.BytesIO(zf.read(n)))
            assert im.mode == "P" and im.size == CLIP_SIZE
            labels[n] = np.asarray(im)
    assert 2 in labels["00006.png"] and all(2 not in labels[f"{i:05d}.png"] for i in range(6))
    assert all(1 in labels[n] for n in names)
    overlay = _download(pg, "#dl-overlay", tmp_path / "overlay.mp4")
    with av.open(str(overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == CLIP_FRAMES
    objects = _download(pg, "#dl-objects", tmp_path / "objects.zip")
    with zipfile.ZipFile(objects) as zf:
        per_object = [n.split("/")[0] for n in zf.namelist()]
        assert per_object.count("1") == per_object.count("2") == CLIP_FRAMES
    # Everything the app wrote is inside the work folder.
    assert not _outside_work(server) - {server.log}


def test_objects_add_rename_hide_delete_and_jobs(page: Page, server: Server, shot: Shot) -> None:
    pg = page
    expect = _expect
    before = _job_ids(server)
    pg.click("#sample")
    _message(pg, "Opened the sample clip")
    pg.click("#sample")  # again: the same job, not a copy
    _message(pg, "the job already in the work folder")
    assert len(_job_ids(server) - before) <= 1
    objects = pg.locator("#object-list")
    expect(objects).to_contain_text("1 · object 1")  # the sample's mask: listed with a swatch
    pg.click("#obj-add")
    _message(pg, "Added object 2")
    expect(objects).to_contain_text("2 · object 2")
    swatches = objects.locator(".rd-sw")
    expect(swatches).to_have_count(2)
    colours = [swatches.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(2)]
    assert colours[0] != colours[1]
    name = pg.locator("#obj-name textarea, #obj-name input").first
    name.fill("rock")
    pg.click("#obj-rename")
    _message(pg, "Object 2 is now rock")
    expect(objects).to_contain_text("2 · rock")
    # Draw the new object on frame 3 (keys: → three times), then hide and delete it.
    pg.locator("body").click(position={"x": 5, "y": 5})
    for _ in range(3):
        pg.keyboard.press("ArrowRight")
    expect(pg.locator("#canvas")).to_contain_text("Frame 3 ")
    pg.keyboard.press("b")  # the box tool
    _drag(pg, (0.05, 0.6), (0.3, 0.95))
    _message(pg, "Box prompt for object 2 on frame 3")
    expect(pg.locator("#annotations")).to_contain_text("frame 3 (object 2)")
    pg.get_by_label("Hide").check()
    _message(pg, "Object 2 is now rock (hidden)")
    expect(objects).to_contain_text("2 · rock (hidden)")
    shot(pg, "01-objects")
    asked: list[str] = []
    pg.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))  # "Cancel": nothing is deleted
    pg.click("#obj-delete")
    _message(pg, "Kept rock")
    expect(objects).to_contain_text("2 · rock")
    pg.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    pg.click("#obj-delete")
    _message(pg, "Deleted rock")
    assert asked and all("Delete rock" in m and "cannot be undone" in m for m in asked), asked
    expect(objects).not_to_contain_text("rock")
    expect(pg.locator("#annotations")).not_to_contain_text("frame 3")  # its only object was rock
    # The address names the job: opening it elsewhere (or after a server restart) shows this job, not the newest.
    url = pg.url
    assert "job=" in url
    sample = url.split("job=")[1].split("&")[0]
    pg.goto(server.url + f"?job={sample}")
    _message(pg, "Reopened your job sample-bear")
    # Delete the job (after a confirmation that names it).
    pg.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    pg.click("#job-delete")
    _message(pg, "Deleted the job sample-bear")
    assert "Delete the job sample-bear" in asked[-1]
    assert sample not in _job_ids(server)
    assert "job=" not in pg.url  # forgotten by this browser
    pg.goto(server.url + f"?job={sample}")  # e.g. deleted from another browser
    _message(pg, "The job this browser had open no longer exists")


@pytest.mark.parametrize("marked", [
    [6],
    [0, 6],
], ids=["only-frame-6", "frames-0-and-6"])
def test_both_directions_from_a_later_frame(page: Page, server: Server, web_data: dict[str, Path],
                                            shot: Shot, marked: list[int]) -> None:
    """Masks on ``marked``; "both" from frame 6 must segment every frame (earlier ones too) before saying done."""
    pg = page
    expect = _expect
    ran = [j for j in sorted(_job_ids(server))
           if '"status": "done"' in (server.work / "jobs" / j / "job.json").read_text()]
    if ran:  # a job with a live preview is open when the upload comes
        pg.goto(server.url + f"?job={ran[-1]}")
        expect(pg.locator("#preview img")).to_be_visible()
    pg.locator("#upload input[type=file]").set_input_files(str(web_data["video"]))
    _message(pg, f"{CLIP_FRAMES} frames of")
    expect(pg.locator("#preview img")).to_have_count(0)  # not the previous job's preview
    pg.wait_for_timeout(2500)  # a few status ticks later, still not
    expect(pg.locator("#preview img")).to_have_count(0)
    a, b = _bear_box(web_data)
    for frame in marked:
        _set_frame(pg, frame)
        _drag(pg, a, b)
        _message(pg, f"Box prompt for object 1 on frame {frame}")
    pg.get_by_label("both").check()
    pg.get_by_label("this frame").check()
    pg.click("#run")
    status = pg.locator("#status")
    expect(status).to_contain_text(f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames", timeout=60_000)
    expect(pg.locator("#timeline")).to_contain_text(f"{CLIP_FRAMES} / {CLIP_FRAMES} with results")
    shot(pg, "01-both")
    job = server.work / "jobs" / pg.url.split("job=")[1].split("&")[0]
    assert sorted(p.stem for p in (job / "masks").glob("*.png")) == [f"{i:05d}" for i in range(CLIP_FRAMES)]
    # Play steps through the frames; space pauses.
    _set_frame(pg, 0)
    pg.click("#play")
    expect(pg.locator("#play")).to_contain_text("Pause")
    expect(pg.locator("#canvas")).to_contain_text(re.compile(r"Frame [2-9] "), timeout=30_000)
    pg.locator("body").click(position={"x": 5, "y": 5})
    pg.keyboard.press(" ")
    expect(pg.locator("#play")).to_contain_text("Play")


def test_sample_clip_reload_cancel_and_continue(page: Page, server: Server, shot: Shot) -> None:
    pg = page
    expect = _expect
    pg.click("#sample")
    expect(pg.locator("#message")).to_contain_text("Opened the sample clip")
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1)")
    pg.get_by_label("first mask").check()
    pg.get_by_label("forward").check()  # the page is shared with earlier tests; after the reload it is the default
    hold = server.work / ".test-hold"
    hold.write_text("3")  # the run waits after 3 frames until the file is removed (see _slow_server.py)
    try:
        pg.click("#run")
        expect(pg.locator("#status")).to_contain_text(re.compile("queued|running"))
        pg.reload()  # the run goes on without the page; the new page shows it
        status = pg.locator("#status")
        expect(status).to_contain_text(re.compile(r"running · [1-3] / 25 frames · [0-9.]+ frames/s · ETA \d+ s"))
        expect(pg.locator("#preview img")).to_be_visible()  # live preview of the latest frame
        _message(pg, "Reopened your job sample-bear")
        shot(pg, "01-progress")
        pg.click("#run")
        _message(pg, "Cannot run: this job is already queued or running; cancel it first")
        pg.click("#cancel")
        expect(status).to_contain_text("cancelling after the current frame")
        expect(pg.locator("#message")).not_to_contain_text("Cannot run")  # not stale next to "cancelled"
    finally:
        hold.unlink(missing_ok=True)
    expect(status).to_contain_text("cancelled · 4 / 25 frames")
    shot(pg, "02-cancelled")
    pg.click("#run")  # continues from the last memory update
    expect(status).to_contain_text("done · 25 / 25 frames", timeout=90_000)
    redone = re.search(r"segmented (\d+) frames", status.inner_text())
    assert redone is not None and int(redone.group(1)) < 25  # continued, not started again
    (job,) = [j for j in (server.work / "jobs").iterdir() if '"name": "sample-bear"' in (j / "job.json").read_text()]
    assert len(list((job / "masks").glob("*.png"))) == 25


def test_bad_uploads_get_a_clear_message(page: Page, server: Server, web_data: dict[str, Path], shot: Shot,
                                         tmp_path: Path) -> None:
    pg = page
    expect = _expect
    upload = pg.locator("#upload input[type=file]")
    jobs_before = set((server.work / "jobs").iterdir())
    outside_before = _outside_work(server)
    # Text renamed .mp4: accepted by extension, refused by content.
    upload.set_input_files({"name": "notes.mp4", "mimeType": "video/mp4", "buffer": b"just some text\n" * 10})
    expect(pg.locator("#message")).to_contain_text("'notes.mp4' is not a readable video file")
    shot(pg, "01-text-as-mp4")
    # A type that is not accepted at all.
    upload.set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    expect(pg.get_by_text("Invalid file type: notes.txt")).to_be_visible()
    _message(pg, "Upload refused: 'notes.txt' is not an accepted file type")  # not the last job's message
    # Over the configured upload limit (0.5 MiB).
    upload.set_input_files({"name": "big.mp4", "mimeType": "video/mp4", "buffer": b"\0" * (600 * 1024)})
    expect(pg.get_by_text("exceed the maximum allowed size")).to_be_visible()
    _message(pg, "Upload refused: 'big.mp4' is too large")
    shot(pg, "02-too-large")
    # A zip whose entry tries to leave the archive.
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.png", (web_data["dir"] / "f0.png").read_bytes())
    upload.set_input_files({"name": "frames.zip", "mimeType": "application/zip", "buffer": evil.getvalue()})
    expect(pg.locator("#message")).to_contain_text("points outside the archive; refused")
    # A path-traversal file name: the name is only shown, never used as a path.
    upload.set_input_files({"name": "../../evil.mp4", "mimeType": "video/mp4",
                            "buffer": web_data["video"].read_bytes()})
    expect(pg.locator("#message")).to_contain_text("Opened evil.mp4")
    # An RGB picture as a mask: refused with the file's own name and advice for the page (no server path).
    rgb = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (CLIP_SIZE[1], CLIP_SIZE[0], 3), np.uint8)).save(
        rgb, format="PNG")
    pg.get_by_test_id("Upload a mask PNG for this frame-upload-button").set_input_files(
        {"name": "photo.png", "mimeType": "image/png", "buffer": rgb.getvalue()})
    _message(pg, "Mask refused: mask 'photo.png'")
    text = pg.locator("#message").inner_text()
    assert "/" not in text.replace("anti-aliased/JPEG", "") and "PIL" not in text and "rdevos.io" not in text, text
    new_jobs = set((server.work / "jobs").iterdir()) - jobs_before
    assert len(new_jobs) == 1  # only the valid video became a job
    assert not list((server.work / "jobs").glob(".incoming-*"))  # refused imports leave nothing behind
    assert _outside_work(server) == outside_before  # nothing new next to the work folder
    for d in (Path(tempfile.gettempdir()), Path.cwd(), server.work.parent.parent):
        assert not (d / "evil.mp4").exists() and not (d / "escape.png").exists()


def test_a_restarted_server_reopens_this_browsers_job(browser: Browser, web_data: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """Not the newest job: the one this browser had open (it remembers it across the restart)."""
    from rdevos_web.jobs import Upload, WorkFolder

    work = WorkFolder(tmp_path / "work")
    older, _ = work.open_sample_job()
    time.sleep(1.1)  # job ids start with the creation time (seconds)
    newer = work.create_job([Upload(web_data["video"], "newer.mp4")])
    assert [j.id for j in work.jobs()] == [newer.id, older.id]
    srv = start_server(work.root, web_data["ckpt"], log=tmp_path / "server.log")
    ctx = browser.new_context(viewport={"width": 1280, "height": 1250})
    try:
        pg = ctx.new_page()
        pg.goto(srv.url)
        _message(pg, "choose one of the 2 jobs in the list")  # a new browser: no job is forced on it
        pg.locator("#job input").click()
        pg.get_by_role("option", name=re.compile("sample-bear")).click()
        _expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1)")
        _expect(pg.locator("#status")).to_contain_text("ready")
        port = int(srv.url.rsplit(":", 1)[1].strip("/"))
        stop_server(srv)
        srv = start_server(work.root, web_data["ckpt"], log=tmp_path / "server2.log", port=port)
        _message(pg, "Reopened your job sample-bear", timeout=60_000)  # the open page reloads itself
        pg.locator("#rd-tl [data-frame='2']").click()
        _expect(pg.locator("#canvas")).to_contain_text("Frame 2 (00002)")
        pg.goto(srv.url)  # no ?job= in the address: the browser's own memory
        _message(pg, "Reopened your job sample-bear")
    finally:
        ctx.close()
        stop_server(srv)
