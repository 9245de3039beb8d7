"""Downloads: the overlay video in the page's colours without hidden objects, COCO JSON, staleness."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from rdevos.io.masks import write_mask
from rdevos_web.exports import current_exports, prepare
from rdevos_web.jobs import Job, Upload, WorkFolder
from rdevos_web.views import downloads_html
from tests.web.conftest import CLIP_FRAMES, CLIP_SIZE
from tests.web.test_jobs import work  # noqa: F401 - the same fixture

W, H = CLIP_SIZE


@pytest.fixture
def job(work: WorkFolder, web_data: dict[str, Path]) -> Job:  # noqa: F811
    """The clip with results: object 1 (the bear's mask) and object 2 (a box) on every frame."""
    job = work.create_job([Upload(web_data["video"], "clip.mp4")])
    bear = np.asarray(Image.open(web_data["mask"])) > 0
    labels = np.where(bear, 1, 0).astype(np.uint8)
    labels[5:30, 110:150] = 2
    job.set_annotation(0, labels)
    job.masks_dir.mkdir()
    for name in job.frame_names:
        write_mask(job.masks_dir / f"{name}.png", labels)
    return job


def test_overlay_uses_the_page_colours_and_leaves_hidden_objects_out(job: Job) -> None:
    job.update_object(1, colour="#00ff00")
    job.update_object(2, colour="#0000ff", hidden=True)
    with av.open(str(prepare(job)["overlay"])) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(frames) == CLIP_FRAMES
    image = job.frame(0).astype(int)
    out = frames[0]
    labels = job.result(0)
    assert labels is not None
    inner = np.zeros_like(labels, bool)
    inner[2:-2, 2:-2] = True  # away from the outlines and the frame's border
    one = (labels == 1) & inner
    diff = (out - image)[one].mean(axis=0)
    assert diff[1] > 40 and diff[1] > diff[0] + 30 and diff[1] > diff[2] + 30  # tinted green, not DAVIS red
    two = np.zeros_like(labels, bool)
    two[9:26, 114:146] = True  # inside object 2's box
    assert np.abs(out[two] - image[two]).mean() < 8  # hidden: the frame as it is (up to video compression)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools with numpy 2
def test_coco_json_names_the_objects_and_holds_the_results(job: Job) -> None:
    pycocotools = pytest.importorskip("pycocotools.coco")
    job.update_object(1, name="bear")
    coco = pycocotools.COCO(str(prepare(job)["coco"]))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {1: "bear", 2: "object 2"}
    images = coco.loadImgs(coco.getImgIds())
    assert [im["file_name"] for im in images] == [p.name for p in job.frame_files]
    labels = job.result(3)
    assert labels is not None
    anns = coco.loadAnns(coco.getAnnIds(imgIds=images[3]["id"]))
    assert sorted(a["category_id"] for a in anns) == [1, 2]
    for a in anns:
        m = labels == a["category_id"]
        assert a["iscrowd"] == 0 and a["area"] == m.sum()
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert (coco.annToMask(a).astype(bool) == m).all()


def test_downloads_go_stale_with_any_edit(job: Job) -> None:
    files = prepare(job)
    info = job.info()
    assert current_exports(job, info) == files
    assert all(p.parent.name == f"v{info.version}" for p in files.values())
    assert 'id="dl-masks"' in downloads_html(files, info)
    job.update_object(2, name="rock")  # any edit
    info = job.info()
    assert current_exports(job, info) is None
    assert "Prepare downloads" in downloads_html(None, info) and "dl-masks" not in downloads_html(None, info)
    again = prepare(job)
    assert current_exports(job, job.info()) == again
    assert not files["masks"].exists()  # the stale version's files are gone
