"""The web app end to end in a real headless Chromium: upload, draw, run, watch, fix, download; bad uploads."""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE, Server

if TYPE_CHECKING:
    from playwright.sync_api import Locator, LocatorAssertions, Page

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
    _expect(pg.locator("#result")).to_contain_text(f"frame {index} ")
    _expect(pg.locator("#editor")).to_contain_text(f"Draw on frame {index} ")


def _paint(pg: Page, colour_index: int, x: float, y: float) -> None:
    """Paint a short stroke with brush colour ``colour_index`` (0 = object 1) at relative canvas position (x, y)."""
    from playwright.sync_api import Error as PlaywrightError

    ed = pg.locator("#editor")
    for attempt in range(4):  # the editor re-renders its toolbar while it loads a new frame
        try:
            ed.locator("button[aria-label='Color']").click(timeout=5000)
            ed.locator("menu.swatch button.color").nth(colour_index).click(timeout=5000)
            ed.locator("button[aria-label='Brush']").click(timeout=5000)  # also closes the colour menu
            break
        except PlaywrightError:
            if attempt == 3:
                raise
            pg.wait_for_timeout(500)
    bb = ed.locator("canvas").first.bounding_box()
    assert bb is not None
    x0, y0 = bb["x"] + bb["width"] * x, bb["y"] + bb["height"] * y
    # A short stroke in few input events: each one waits for a frame of the software-rendered canvas.
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    pg.mouse.move(x0 + 12, y0 + 4)
    pg.mouse.move(x0 + 24, y0 + 8)
    pg.mouse.up()


def _download(pg: Page, selector: str, dest: Path) -> Path:
    with pg.expect_download() as dl:
        pg.click(selector)
    dl.value.save_as(dest)
    return dest


def _outside_work(server: Server) -> set[Path]:
    """Every file under the server's temporary root except the work folder."""
    root = server.work.parent
    return {p for p in root.rglob("*") if server.work not in p.parents and p != server.work}


def test_upload_run_fix_download(page: Page, server: Server, web_data: dict[str, Path], shot: Shot,
                                 tmp_path: Path) -> None:
    pg = page
    expect = _expect
    # 1. Upload a real clip (mp4) and its first-frame mask (object 1).
    pg.locator("#upload input[type=file]").set_input_files(str(web_data["video"]))
    expect(pg.locator("#message")).to_contain_text(f"{CLIP_FRAMES} frames of {CLIP_SIZE[0]}x{CLIP_SIZE[1]}")
    mask_input = pg.get_by_test_id("Upload a mask PNG for this frame-upload-button")
    mask_input.set_input_files(str(web_data["mask"]))
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1)")
    shot(pg, "01-uploaded")
    # 2. Run in the background; the status shows progress, then completion.
    pg.click("#run")
    expect(pg.locator("#status")).to_contain_text(re.compile("running|done"))  # progress: see the cancel test
    shot(pg, "02-running")
    expect(pg.locator("#status")).to_contain_text(f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames", timeout=60_000)
    # The job lives on the server: a reload shows it with its results.
    pg.reload()
    expect(pg.locator("#status")).to_contain_text(f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    # 3. Scrub to frame 6 and fix it: paint a new object (colour 2) there and propagate from this frame.
    _set_frame(pg, 6)
    _paint(pg, 1, 0.5, 0.45)
    pg.get_by_label("this frame").check()
    pg.click("#run")  # saves the drawing as frame 6's mask, then runs from it
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1); frame 6 (objects 1, 2)")
    expect(pg.locator("#status")).to_contain_text("done · 4 / 4 frames", timeout=60_000)  # frames 6..9
    shot(pg, "03-fixed")
    # 4. Downloads.
    pg.click("#prepare")
    expect(pg.locator("#dl-masks")).to_be_visible(timeout=60_000)
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
    overlay = _download(pg, "#dl-overlay", tmp_path / "overlay.mp4")
    with av.open(str(overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == CLIP_FRAMES
    objects = _download(pg, "#dl-objects", tmp_path / "objects.zip")
    with zipfile.ZipFile(objects) as zf:
        per_object = [n.split("/")[0] for n in zf.namelist()]
        assert per_object.count("1") == per_object.count("2") == CLIP_FRAMES
    # Everything the app wrote is inside the work folder.
    assert not _outside_work(server) - {server.log}


def test_sample_clip_reload_cancel_and_continue(page: Page, server: Server, shot: Shot) -> None:
    pg = page
    expect = _expect
    pg.click("#sample")
    expect(pg.locator("#message")).to_contain_text("Opened the sample clip")
    expect(pg.locator("#annotations")).to_contain_text("frame 0 (object 1)")
    pg.get_by_label("first mask").check()
    hold = server.work / ".test-hold"
    hold.write_text("3")  # the run waits after 3 frames until the file is removed (see _slow_server.py)
    try:
        pg.click("#run")
        expect(pg.locator("#status")).to_contain_text(re.compile("queued|running"))
        pg.reload()  # the run goes on without the page; the new page shows it
        status = pg.locator("#status")
        expect(status).to_contain_text(re.compile(r"running · [1-3] / 25 frames · [0-9.]+ frames/s · ETA \d+ s"))
        expect(pg.locator("#preview img")).to_be_visible()  # live preview of the latest frame
        shot(pg, "01-progress")
        pg.click("#cancel")
        expect(status).to_contain_text("cancelling after the current frame")
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
    # Over the configured upload limit (0.5 MiB).
    upload.set_input_files({"name": "big.mp4", "mimeType": "video/mp4", "buffer": b"\0" * (600 * 1024)})
    expect(pg.get_by_text("exceed the maximum allowed size")).to_be_visible()
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
    new_jobs = set((server.work / "jobs").iterdir()) - jobs_before
    assert len(new_jobs) == 1  # only the valid video became a job
    assert not list((server.work / "jobs").glob(".incoming-*"))  # refused imports leave nothing behind
    assert _outside_work(server) == outside_before  # nothing new next to the work folder
    for d in (Path(tempfile.gettempdir()), Path.cwd(), server.work.parent.parent):
        assert not (d / "evil.mp4").exists() and not (d / "escape.png").exists()
