"""The editor as an annotator uses it, in a real headless Chromium: what the page shows is what the job holds.

One test per bug of issue 24 (each failed with the editor before the fix), then undo/redo, zoom, the layout at
1280x720 and the downloads. Jobs are made on disk (the work folder is the server's) so that each test starts from
the state it needs without waiting for uploads or runs it does not test.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE, Server
from tests.web.test_app_browser import _at, _bear_box, _click, _download, _drag, _expect, _message

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

Shot = Callable[["Page", str], Path]
W, H = CLIP_SIZE

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------------------------------------------- helpers
def _new_job(server: Server, web_data: dict[str, Path], name: str, *, mask: bool = True) -> Path:
    """A job of the test clip made directly in the server's work folder (with the clip's first-frame mask)."""
    from rdevos_web.jobs import Upload, WorkFolder

    job = WorkFolder(server.work).create_job([Upload(web_data["video"], name)])
    if mask:
        job.set_annotation(0, Image.open(web_data["mask"]))
    return job.folder


def _open(pg: Page, server: Server, job: Path) -> None:
    pg.goto(server.url + f"?job={job.name}")
    _message(pg, "Reopened your job")
    _expect(pg.locator("#canvas img")).to_be_visible()


def _frame(pg: Page, index: int) -> None:
    pg.locator(f"#rd-tl [data-frame='{index}']").click()
    _expect(pg.locator("#canvas")).to_contain_text(f"Frame {index} ")


def _paint(pg: Page, ann: Path, a: tuple[float, float], b: tuple[float, float], timeout: float = 30.0) -> None:
    """Drag with the brush (or eraser) from frame point ``a`` to ``b``; returns when the frame's mask file changed."""
    import time

    before = ann.read_bytes() if ann.exists() else None
    pg.locator("#canvas img").scroll_into_view_if_needed()
    _drag(pg, a, b)
    t_end = time.monotonic() + timeout
    while (ann.read_bytes() if ann.exists() else None) == before:
        assert time.monotonic() < t_end, f"{ann.name} did not change"
        time.sleep(0.05)


def _labels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _status(pg: Page, text: str | re.Pattern[str], timeout: float = 60_000) -> None:
    _expect(pg.locator("#status")).to_contain_text(text, timeout=timeout)


def _log(server: Server) -> str:
    return server.log.read_text(errors="replace")


def _swatch(pg: Page, obj: int) -> str:
    return str(pg.locator(f"#object-list [data-obj='{obj}'] .rd-sw").evaluate(
        "e => getComputedStyle(e).backgroundColor"))


@pytest.fixture
def hold(server: Server) -> Iterator[Path]:
    """``hold.write_text("N")``: runs wait before writing more than N results (see _slow_server.py)."""
    path = server.work / ".test-hold"
    yield path
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- bugs
def test_bug1_keys_and_buttons_without_a_target_say_so(page: Page, server: Server,
                                                       web_data: dict[str, Path]) -> None:
    """A number key for an object that does not exist, and "Remove this frame's mask" with no job open: a message,
    not Gradio's red "Error" (the handlers returned a component that was not an output of their event)."""
    pg = page
    pg.evaluate("localStorage.clear()")
    pg.goto(server.url)
    _message(pg, "No job open")
    pg.click("#clear")
    _message(pg, "No job open: upload a video or open the sample clip first")
    job = _new_job(server, web_data, "bug1.mp4")
    _open(pg, server, job)
    pg.locator("body").click(position={"x": 5, "y": 5})
    pg.keyboard.press("7")
    _message(pg, "There is no object 7: this job has 1 object")
    _expect(pg.locator(".toast-body")).to_have_count(0)
    assert "not specified as output" not in _log(server)


def test_bug2_run_settings_belong_to_the_job(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    """Direction, start and processing size are kept with the job (reload, restart) and never carried over to
    another job; Run uses the job's own."""
    pg = page
    a, b = _new_job(server, web_data, "bug2-a.mp4"), _new_job(server, web_data, "bug2-b.mp4")
    _open(pg, server, a)
    pg.get_by_label("both").check()
    pg.get_by_label("this frame").check()
    pg.get_by_text("Model and settings").click()
    size = pg.get_by_label("Processing size (short side)")
    size.click()
    pg.get_by_role("option", name="240", exact=True).click()
    _expect(size).to_have_value("240")
    pg.wait_for_timeout(1500)  # the change is stored as it is made
    pg.reload()
    _message(pg, "Reopened your job bug2-a.mp4")
    _expect(pg.get_by_label("both")).to_be_checked()
    _expect(pg.get_by_label("this frame")).to_be_checked()
    pg.get_by_text("Model and settings").click()
    _expect(pg.get_by_label("Processing size (short side)")).to_have_value("240")
    _open(pg, server, b)  # another job: its own settings (the server's defaults), not a's
    _expect(pg.get_by_label("forward")).to_be_checked()
    _expect(pg.get_by_label("first mask")).to_be_checked()
    pg.get_by_text("Model and settings").click()
    _expect(pg.get_by_label("Processing size (short side)")).to_have_value("native")
    _open(pg, server, a)
    _expect(pg.get_by_label("both")).to_be_checked()
    pg.click("#run")  # frame 0 (the one shown) has the mask: "this frame" starts there
    _status(pg, f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    run = json.loads((a / "job.json").read_text())["run"]
    assert (run["direction"], run["start"], run["resolution"]) == ("both", 0, 240)


def test_bug3_masks_cannot_change_during_a_run(page: Page, server: Server, web_data: dict[str, Path],
                                               hold: Path) -> None:
    """While a run is in progress every mask edit is refused (it would make the results disagree with the masks)."""
    pg = page
    job = _new_job(server, web_data, "bug3.mp4")
    ann = job / "annotations" / "00000.png"
    before = ann.read_bytes()
    _open(pg, server, job)
    hold.write_text("1")  # the run waits after its first result until the file is removed
    pg.click("#run")
    _status(pg, re.compile("queued|running"))
    pg.click("#clear")
    _message(pg, "a run of this job is in progress")
    assert ann.read_bytes() == before
    mask = io.BytesIO()
    Image.fromarray(np.full((H, W), 1, np.uint8), mode="L").save(mask, format="PNG")
    pg.get_by_test_id("Upload a mask PNG for this frame-upload-button").set_input_files(
        {"name": "m.png", "mimeType": "image/png", "buffer": mask.getvalue()})
    _message(pg, "a run of this job is in progress")
    assert ann.read_bytes() == before
    hold.unlink()
    _status(pg, f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    assert ann.read_bytes() == before and sorted(p.name for p in (job / "annotations").iterdir()) == ["00000.png"]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools with numpy 2
def test_bug4_downloads_follow_the_job(page: Page, server: Server, web_data: dict[str, Path],
                                       tmp_path: Path) -> None:
    """Downloads prepared before a change are not offered after it (stale), and preparing again gives the new
    results; the results themselves are marked out of date while the masks changed after the run. The COCO file
    names the objects and holds the results."""
    pg = page
    job = _new_job(server, web_data, "bug4.mp4")
    _open(pg, server, job)
    pg.click("#run")
    _status(pg, f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    pg.click("#prepare")
    _expect(pg.locator("#dl-masks")).to_be_visible(timeout=60_000)
    with zipfile.ZipFile(_download(pg, "#dl-masks", tmp_path / "before.zip")) as zf:
        assert all(2 not in _labels_of(zf, n) for n in zf.namelist())
    # A change: a second object painted on frame 0, then a new run.
    pg.click("#obj-add")
    _message(pg, "Added object 2")
    pg.get_by_role("radio", name="Brush").check()
    _paint(pg, job / "annotations" / "00000.png", (0.7, 0.2), (0.85, 0.25))
    _expect(pg.locator("#dl-masks")).to_have_count(0)  # the old downloads are not offered any more
    _expect(pg.locator("#downloads")).to_contain_text("press Prepare downloads again")
    _status(pg, "results out of date")
    _expect(pg.locator("#rd-tl .rd-c.stale").first).to_be_attached()
    first_run = json.loads((job / "job.json").read_text())["run"]["signature"]
    pg.click("#run")
    _wait_run(job, first_run)
    _status(pg, f"done · {CLIP_FRAMES} / {CLIP_FRAMES} frames")
    _expect(pg.locator("#status")).not_to_contain_text("out of date")
    _expect(pg.locator("#dl-masks")).to_have_count(0)
    pg.click("#prepare")
    _expect(pg.locator("#dl-masks")).to_be_visible(timeout=60_000)
    with zipfile.ZipFile(_download(pg, "#dl-masks", tmp_path / "after.zip")) as zf:
        assert 2 in _labels_of(zf, "00000.png")
        results = {n: _labels_of(zf, n) for n in zf.namelist()}
    # COCO: what CVAT's and Label Studio's importers read (pycocotools), with the objects' names.
    from pycocotools.coco import COCO

    name = pg.locator("#obj-name textarea, #obj-name input").first
    _expect(name).to_have_value("object 2")
    coco_path = _download(pg, "#dl-coco", tmp_path / "coco.json")
    coco = COCO(str(coco_path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["object 1", "object 2"]
    assert len(coco.getImgIds()) == CLIP_FRAMES
    for img in coco.loadImgs(coco.getImgIds()):
        labels = results[Path(img["file_name"]).stem + ".png"]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            assert (coco.annToMask(ann).astype(bool) == (labels == ann["category_id"])).all()
        assert {a["category_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))} == (
            {int(v) for v in np.unique(labels) if v})


def _wait_run(job: Path, before: str, timeout: float = 60.0) -> None:
    """Until a run other than ``before`` (a signature) is done."""
    import time

    t_end = time.monotonic() + timeout
    while True:
        info = json.loads((job / "job.json").read_text())
        if info["status"] == "done" and (info.get("run") or {}).get("signature") != before:
            return
        assert time.monotonic() < t_end, info
        time.sleep(0.1)


def _labels_of(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zf.read(name))))


def test_bug5_tool_keys_leave_the_shortcuts_working(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    """B, D and E pick a tool and leave the keyboard to the shortcuts (they used to focus the Tool radio input,
    after which every key went to it); so does picking a tool with the mouse."""
    pg = page
    _open(pg, server, _new_job(server, web_data, "bug5.mp4", mask=False))
    pg.locator("body").click(position={"x": 5, "y": 5})
    for frame, (key, tool) in enumerate([("d", "Brush"), ("e", "Eraser"), ("b", "Box / click")], start=1):
        pg.keyboard.press(key)
        _expect(pg.get_by_role("radio", name=tool)).to_be_checked()
        pg.keyboard.press("ArrowRight")
        _expect(pg.locator("#canvas")).to_contain_text(f"Frame {frame} ")
    pg.get_by_role("radio", name="Eraser").check()  # with the mouse: focus is on the radio input now
    pg.keyboard.press("ArrowRight")
    _expect(pg.locator("#canvas")).to_contain_text("Frame 4 ")
    pg.keyboard.press("b")
    _expect(pg.get_by_role("radio", name="Box / click")).to_be_checked()


def test_bug6_a_typed_or_dragged_colour_is_saved(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    """A hex colour typed in the picker (Enter or Tab) and a drag of its hue bar change the object's colour for
    good, as the object list (drawn by the server) and a reload show."""
    pg = page
    job = _new_job(server, web_data, "bug6.mp4")
    _open(pg, server, job)
    _expect(pg.locator("#object-list")).to_contain_text("1 · object 1")
    pg.locator("#obj-colour .dialog-button").click()
    field = pg.locator("#obj-colour input[type=text]")
    field.fill("#00ffff")
    field.press("Enter")
    _expect(pg.locator("#object-list [data-obj='1'] .rd-sw")).to_have_css("background-color", "rgb(0, 255, 255)")
    field.fill("#ff8000")
    field.press("Tab")
    _expect(pg.locator("#object-list [data-obj='1'] .rd-sw")).to_have_css("background-color", "rgb(255, 128, 0)")
    pg.locator("#obj-colour .dialog-button").click()
    hue = pg.locator("#obj-colour .hue-slider")
    if not hue.is_visible():
        pg.locator("#obj-colour .dialog-button").click()
    box = hue.bounding_box()
    assert box is not None
    pg.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] / 2)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] / 2, steps=4)
    pg.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=4)
    pg.mouse.up()
    _expect(pg.locator("#object-list [data-obj='1'] .rd-sw")).not_to_have_css("background-color", "rgb(255, 128, 0)")
    pg.wait_for_timeout(1500)
    dragged = _swatch(pg, 1)
    pg.reload()
    _message(pg, "Reopened your job bug6.mp4")
    assert _swatch(pg, 1) == dragged


def test_bug7_a_click_that_changes_nothing_says_so(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    """A positive click the prompt model ignores (outside the box) is not reported as an addition nor drawn;
    a busy indicator shows while a prompt is computed."""
    pg = page
    job = _new_job(server, web_data, "bug7.mp4", mask=False)
    _open(pg, server, job)
    pg.evaluate("window.rdevos.busyLog = []")
    a, b = _bear_box(web_data)
    _drag(pg, a, b)
    _message(pg, "Box prompt for object 1 on frame 0")
    busy = pg.evaluate("window.rdevos.busyLog")
    ann = job / "annotations" / "00000.png"
    before, shown = ann.read_bytes(), pg.locator("#canvas img").get_attribute("src")
    _click(pg, 0.94, 0.11)  # far outside the box: the model ignores it
    _message(pg, "No change: that click left object 1's mask on frame 0 as it was")
    _expect(pg.locator("#message")).not_to_contain_text("Added to")
    assert ann.read_bytes() == before
    assert pg.locator("#canvas img").get_attribute("src") == shown  # no dot drawn for it
    assert busy == [True, False]  # "Computing…" showed while the prompt model ran


def test_bug8_a_prompt_on_a_result_changes_only_its_object(page: Page, server: Server,
                                                           web_data: dict[str, Path]) -> None:
    """A box for object 2 on a frame showing a run's result changes object 2 only: object 1 stays a result there
    (no user mask made of it), deleting object 2 leaves the frame as it was, and a run from that frame carries
    object 1 on."""
    pg = page
    from rdevos.io.masks import write_mask
    from rdevos_web.jobs import JobStatus, WorkFolder

    job = _new_job(server, web_data, "bug8.mp4")
    bear = _labels(web_data["mask"]) > 0
    second = np.zeros((H, W), bool)
    second[5:25, 110:150] = True
    (job / "masks").mkdir()
    truth = np.where(second, 2, np.where(bear, 1, 0)).astype(np.uint8)
    for i in range(CLIP_FRAMES):
        write_mask(job / "masks" / f"{i:05d}.png", truth)
    w = WorkFolder(server.work).job(job.name)
    w.set_annotation(0, truth)
    w.update(status=JobStatus.DONE, done=CLIP_FRAMES, total=CLIP_FRAMES)
    _open(pg, server, job)
    _frame(pg, 6)
    _expect(pg.locator("#canvas")).to_contain_text("Frame 6 (00006) · result")
    pg.locator("body").click(position={"x": 5, "y": 5})
    pg.keyboard.press("2")
    _message(pg, "Drawing object 2")
    _drag(pg, (0.6, 0.05), (0.97, 0.35))
    _message(pg, "Box prompt for object 2 on frame 6")
    ann = _labels(job / "annotations" / "00006.png")
    assert (ann == 2).any() and not (ann == 1).any()  # object 1 did not become a user mask
    _expect(pg.locator("#annotations")).to_contain_text("frame 6 (object 2)")
    # Run from this frame: object 1 goes on from its result there.
    pg.get_by_label("this frame").check()
    pg.click("#run")
    _status(pg, "done · 4 / 4 frames")
    for i in range(7, CLIP_FRAMES):
        assert 1 in _labels(job / "masks" / f"{i:05d}.png"), i
    # Deleting object 2 leaves no user mask of object 1 behind.
    pg.once("dialog", lambda d: d.accept())
    pg.click("#obj-delete")
    _message(pg, "Deleted object 2")
    assert not (job / "annotations" / "00006.png").exists()
    _expect(pg.locator("#annotations")).to_contain_text("Masks on frame 0 (object 1)")
    _expect(pg.locator("#annotations")).not_to_contain_text("frame 6")
    _expect(pg.locator("#canvas")).to_contain_text("Frame 6 (00006) · result")


def test_bug9_device_and_model_are_checked_before_a_run(page: Page, server: Server,
                                                        web_data: dict[str, Path]) -> None:
    """Only the devices this server has are offered; a model path that does not exist is said at once (and on
    Run, which queues nothing), with no advice to do what was just done."""
    pg = page
    job = _new_job(server, web_data, "bug9.mp4")
    _open(pg, server, job)
    pg.get_by_text("Model and settings").click()
    pg.get_by_label("Device").click()
    options = pg.get_by_role("option")
    _expect(options.first).to_be_visible()
    import torch

    offered = {t.replace("✓", "").strip() for t in options.all_inner_texts()}
    assert "cuda" not in offered or torch.cuda.is_available()
    assert "mps" not in offered or torch.backends.mps.is_available()
    assert {"auto", "cpu"} <= offered
    pg.keyboard.press("Escape")
    model = pg.get_by_label("Model", exact=True)
    model.fill("/no/such/dir/model.pt")
    model.press("Tab")
    _message(pg, "the checkpoint '/no/such/dir/model.pt' does not exist")
    pg.click("#run")
    _message(pg, "Cannot run: the checkpoint '/no/such/dir/model.pt' does not exist")
    _expect(pg.locator("#message")).not_to_contain_text("enter the checkpoint's path")
    _status(pg, "ready")
    assert json.loads((job / "job.json").read_text())["status"] == "ready"


def test_bug10_a_second_tab_follows_the_job(page: Page, server: Server, web_data: dict[str, Path],
                                            hold: Path) -> None:
    """A second tab on the same job shows the objects and masks made in the first, and the job list of both says
    "running" during a run."""
    pg = page
    job = _new_job(server, web_data, "bug10.mp4")
    _open(pg, server, job)
    other = pg.context.new_page()
    try:
        _open(other, server, job)
        pg.click("#obj-add")
        _message(pg, "Added object 2")
        pg.get_by_role("radio", name="Brush").check()
        _paint(pg, job / "annotations" / "00000.png", (0.7, 0.2), (0.85, 0.25))
        _expect(other.locator("#object-list")).to_contain_text("2 · object 2", timeout=10_000)
        _expect(other.locator("#annotations")).to_contain_text("frame 0 (objects 1, 2)")
        hold.write_text("1")
        pg.click("#run")
        for tab in (pg, other):
            _expect(tab.locator("#job input")).to_have_value(re.compile("bug10.mp4 · .* · (queued|running)"),
                                                             timeout=10_000)
        _status(other, "running")
        hold.unlink()
        _status(other, "done")
        _expect(other.locator("#job input")).to_have_value(re.compile("bug10.mp4 · .* · done"), timeout=10_000)
    finally:
        other.close()


def test_frames_do_not_fill_the_upload_cache(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    """Gradio keeps every file it serves for a day: frames shown while editing must not go through it."""
    pg = page
    job = _new_job(server, web_data, "cache.mp4")
    _open(pg, server, job)
    cache = server.work / ".gradio"

    def files() -> set[Path]:
        return {p for p in cache.rglob("*") if p.is_file()} if cache.exists() else set()

    before = files()
    pg.locator("body").click(position={"x": 5, "y": 5})
    for i in range(1, 6):
        pg.keyboard.press("ArrowRight")
        _expect(pg.locator("#canvas")).to_contain_text(f"Frame {i} ")
    pg.get_by_role("radio", name="Brush").check()
    _paint(pg, job / "annotations" / "00005.png", (0.2, 0.2), (0.3, 0.3))
    assert files() == before


# ---------------------------------------------------------------------------------------------------- features
def test_undo_and_redo_of_mask_edits(page: Page, server: Server, web_data: dict[str, Path]) -> None:
    pg = page
    job = _new_job(server, web_data, "undo.mp4")
    _open(pg, server, job)
    _frame(pg, 2)
    pg.get_by_role("radio", name="Brush").check()
    ann = job / "annotations" / "00002.png"
    _paint(pg, ann, (0.2, 0.2), (0.4, 0.3))
    _message(pg, "Painted object 1 on frame 2")
    painted = _labels(ann)
    pg.get_by_role("radio", name="Eraser").check()
    _paint(pg, ann, (0.2, 0.2), (0.3, 0.3))
    _message(pg, "Erased from object 1 on frame 2")
    erased = _labels(ann)
    assert erased.sum() < painted.sum()
    pg.locator("body").click(position={"x": 5, "y": 5})
    pg.keyboard.press("Control+z")
    _message(pg, "Undid the eraser stroke on frame 2")
    assert (_labels(ann) == painted).all()
    pg.keyboard.press("Control+z")
    _message(pg, "Undid the brush stroke on frame 2")
    assert not ann.exists()
    _expect(pg.locator("#annotations")).not_to_contain_text("frame 2")
    pg.keyboard.press("Control+Shift+z")
    _message(pg, "Redid the brush stroke on frame 2")
    assert (_labels(ann) == painted).all()
    pg.click("#redo")
    _message(pg, "Redid the eraser stroke on frame 2")
    assert (_labels(ann) == erased).all()
    _expect(pg.locator("#redo")).to_be_disabled()
    pg.locator("body").click(position={"x": 5, "y": 5})
    pg.keyboard.press("Control+Shift+z")
    _message(pg, "Nothing to redo")
    _frame(pg, 0)  # undo goes back to the frame of the edit
    pg.click("#undo")
    _message(pg, "Undid the eraser stroke on frame 2")
    _expect(pg.locator("#canvas")).to_contain_text("Frame 2 ")


def test_layout_zoom_and_brush_cursor_at_1280x720(browser: Browser, server: Server, web_data: dict[str, Path],
                                                  shot: Shot) -> None:
    """On a laptop screen the frame, the object list and Run show without scrolling; the frame zooms (keys,
    wheel, buttons) about the pointer, pans and fits again, and a stroke on the zoomed frame lands where drawn."""
    job = _new_job(server, web_data, "layout.mp4")
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        _open(pg, server, job)
        shot(pg, "01-1280x720")
        for sel in ("#canvas img", "#object-list", "#run", "#message", "#status"):
            r = pg.locator(sel).bounding_box()
            assert r is not None and r["y"] >= 0 and r["y"] + r["height"] <= 720 and r["x"] + r["width"] <= 1280, \
                (sel, r)
        assert pg.evaluate("document.scrollingElement.scrollTop") == 0
        view = pg.locator("#canvas .rd-view").bounding_box()
        fit = pg.locator("#canvas img").bounding_box()
        assert view and fit and (abs(fit["width"] - view["width"]) < 2 or abs(fit["height"] - view["height"]) < 2)
        # Zoom in about the centre with the keys, then draw: the stroke lands on the frame pixels under it.
        pg.locator("body").click(position={"x": 1, "y": 1})
        pg.keyboard.press("+")
        pg.keyboard.press("+")
        zoomed = pg.locator("#canvas img").bounding_box()
        assert zoomed and zoomed["width"] > fit["width"] * 1.5
        _expect(pg.locator("#rd-zoom-level")).to_contain_text("%")
        _expect(pg.locator("#rd-zoom-level")).not_to_contain_text("fit")
        pg.get_by_role("radio", name="Brush").check()
        pg.locator("body").click(position={"x": 1, "y": 1})
        x, y = _at(pg, 0.5, 0.5)
        pg.mouse.move(x, y)
        cursor = pg.locator("#rd-cursor")
        _expect(cursor).to_be_visible()
        scale = zoomed["width"] / W
        assert abs(cursor.bounding_box()["width"] - 2 * 8 * scale) < 3  # the brush's size on screen (radius 8)
        _paint(pg, job / "annotations" / "00000.png", (0.45, 0.5), (0.55, 0.5))
        _message(pg, "Painted object 1 on frame 0")
        shot(pg, "02-zoomed")
        ann = _labels(job / "annotations" / "00000.png")
        assert ann[H // 2, W // 2] == 1 and ann[H // 2, int(W * 0.45)] == 1
        # Pan with the middle button, zoom with the wheel about the pointer, then fit again.
        before = pg.locator("#canvas img").bounding_box()
        pg.mouse.move(x, y)
        pg.mouse.down(button="middle")
        pg.mouse.move(x + 40, y + 10, steps=3)
        pg.mouse.up(button="middle")
        moved = pg.locator("#canvas img").bounding_box()
        assert abs(moved["x"] - before["x"] - 40) < 2 and abs(moved["y"] - before["y"] - 10) < 2
        px, py = _at(pg, 0.25, 0.25)
        pg.mouse.move(px, py)
        pg.mouse.wheel(0, -200)
        assert np.allclose(_at(pg, 0.25, 0.25), (px, py), atol=2)  # the point under the pointer stays there
        pg.locator("[data-zoom='fit']").click()
        _expect(pg.locator("#rd-zoom-level")).to_contain_text("fit")
        again = pg.locator("#canvas img").bounding_box()
        assert abs(again["width"] - fit["width"]) < 1 and abs(again["x"] - fit["x"]) < 1
    finally:
        ctx.close()
