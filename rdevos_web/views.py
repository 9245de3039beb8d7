"""What the page shows of a job record, as text and HTML (no Gradio here).

Frames travel to the page inside the HTML as JPEG data URLs, not as files: Gradio keeps every file it serves in its
upload cache for a day, and an editor sends a new frame with every click (68 MB in 40 minutes with 4K frames).
Downloads are links to the files in the job's folder (served from Gradio's allowed paths, not copied).
"""

from __future__ import annotations

import base64
import html
import re
import time
import urllib.parse
from pathlib import Path

import cv2
import numpy as np

from rdevos_web.exports import KINDS
from rdevos_web.store import Job, JobInfo, JobStatus, ObjectInfo, plural

__all__ = ["status_text", "annotation_text", "timeline_html", "objects_html", "canvas_html", "preview_html",
           "downloads_html", "data_url", "playback_frame", "singular", "when"]

_MAX_CELLS = 300  # timeline cells (frames are grouped beyond this)
_PREVIEW_WIDTH = 480


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def singular(text: str) -> str:
    """Messages written elsewhere say "1 frames"; the page says "1 frame"."""
    return re.sub(r"(?<![\d.])1 frames\b", "1 frame", text)


def status_text(info: JobInfo | None) -> str:
    if info is None:
        return "No job open."
    parts = [f"**{info.status.value}**"]
    if info.total:
        parts.append(f"{info.done} / {plural(info.total, 'frame')}")
    if info.status is JobStatus.RUNNING and info.frames_per_s > 0:
        parts.append(f"{info.frames_per_s:.2f} frames/s")
        if info.eta_s is not None:
            parts.append(f"ETA {info.eta_s:.0f} s")
    if info.message:
        parts.append(singular(info.message))
    if info.status is JobStatus.DONE and info.done < info.total:
        parts.append(f"**warning:** {info.total - info.done} of the {plural(info.total, 'frame')} this run was to "
                     "segment have no result")
    if info.results_stale and not info.active:
        parts.append("**results out of date:** masks changed after this run; press Run to update them")
    return " · ".join(parts)


def annotation_text(job: Job, info: JobInfo) -> str:
    ann = job.annotation_summary(info)
    if not ann:
        return "No mask yet: drag a box around an object on a frame (or upload a mask PNG)."
    items = [f"frame {i} (object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})" for i, ids in ann.items()]
    return "Masks on " + "; ".join(items)


def timeline_html(job: Job, info: JobInfo, frame: int) -> str:
    """One cell per frame (or group): dark = a user mask, blue = a result (hatched: out of date), outlined = shown."""
    n = info.num_frames
    ann = set(job.annotated_frames())
    res = job.result_frames()
    stale = " stale" if info.results_stale else ""
    step = max(1, -(-n // _MAX_CELLS))
    cells = []
    for a in range(0, n, step):
        group = range(a, min(a + step, n))
        cls = "ann" if any(i in ann for i in group) else f"res{stale}" if all(i in res for i in group) else ""
        what = ("your mask" if cls.startswith("ann") else
                "result" + (" (out of date)" if stale else "") if cls.startswith("res") else "nothing yet")
        if frame in group:
            cls += " cur"
        span = f"frame {a}" if step == 1 else f"frames {a}-{group[-1]}"
        cells.append(f'<span class="rd-c {cls}" data-frame="{a}" title="{span}: {what}"></span>')
    legend = ('<div class="rd-legend"><span style="background:#444"></span>your mask'
              '<span style="background:#7fb3e6"></span>result<span style="background:#ddd"></span>not yet'
              f' · {len(ann)} with your mask, {len(res)} / {n} with results'
              f'{" · results out of date" if stale and res else ""}</div>')
    return f'<div id="rd-tl">{"".join(cells)}</div>{legend}'


def objects_html(objects: list[ObjectInfo], selected: int | None) -> str:
    if not objects:
        return ("<div class='rd-legend'>Objects: none yet. Drag a box on the frame, or press <b>Add object</b>."
                "</div>")
    rows = ["<div class='rd-legend'>Objects: click one to draw it (keys 1-9)</div>"]
    for o in objects:
        cls = "rd-obj" + (" sel" if o.id == selected else "") + (" hid" if o.hidden else "")
        rows.append(f'<div class="{cls}" data-obj="{o.id}" data-name="{html.escape(o.name)}" title="object {o.id}">'
                    f'<span class="rd-sw" style="background:{html.escape(o.colour)}"></span>'
                    f'<span>{o.id} · {html.escape(o.name)}{" (hidden)" if o.hidden else ""}</span></div>')
    return "".join(rows)


def data_url(image: np.ndarray, quality: int = 90) -> str:
    """An RGB image as a JPEG ``data:`` URL."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise ValueError("cannot encode the frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def canvas_html(image: np.ndarray, label: str, frame: int) -> str:
    """The frame canvas: a caption and the frame (the page's script zooms and pans it and takes the input)."""
    h, w = image.shape[:2]
    return (f'<div class="rd-head">{html.escape(label)}</div>'
            f'<div class="rd-view" data-w="{w}" data-h="{h}"><img class="rd-img" alt="frame {frame}" '
            f'width="{w}" height="{h}" draggable="false" src="{data_url(image)}"></div>')


def preview_html(image: np.ndarray | None, label: str) -> str:
    if image is None:
        return f'<div class="rd-legend">{html.escape(label)}</div>'
    h, w = image.shape[:2]
    if w > _PREVIEW_WIDTH:
        image = cv2.resize(image, (_PREVIEW_WIDTH, max(1, round(h * _PREVIEW_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return f'<div class="rd-legend">{html.escape(label)}</div><img class="rd-preview" alt="latest result" ' \
           f'src="{data_url(image, 80)}">'


def _file_url(path: Path) -> str:
    return "gradio_api/file=" + urllib.parse.quote(str(path))


def downloads_html(files: dict[str, Path] | None, info: JobInfo | None, partial: bool = False) -> str:
    """Links to the prepared downloads, or why there are none."""
    if info is None:
        return ""
    if files is None:
        if (info.exports or {}).get("version") not in (None, info.version):
            return ("<div class='rd-legend' id='dl-stale'>The job changed after the downloads were prepared: "
                    "press <b>Prepare downloads</b> again.</div>")
        return ""
    links = [f'<a class="rd-dl" id="dl-{kind}" href="{html.escape(_file_url(files[kind]))}" '
             f'download="{html.escape(files[kind].name)}">{html.escape(label)}</a>'
             for kind, (_, label) in KINDS.items() if kind in files]
    note = " (made during a run: partial results)" if partial else ""
    return f"<div class='rd-legend'>Downloads of version {info.version}{note}:</div><div class='rd-dls'>" \
           f"{''.join(links)}</div>"


def playback_frame(frame0: int, t0: float, now: float, fps: float, num_frames: int) -> int:
    """The frame to show during playback at ``fps`` started at ``frame0`` at time ``t0`` (frames the page could
    not show in time are skipped, so a video plays at its own speed)."""
    return int(min(frame0 + int((now - t0) * max(fps, 1e-3) + 1e-6), num_frames - 1))
