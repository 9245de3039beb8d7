"""Gradio UI: upload a video, mark objects with a box, clicks or the brush, run in the background, watch, download.

The page holds no state that matters: jobs, object lists, masks and results are in the work folder
(:mod:`rdevos_web.jobs`), so a reload or a new browser shows the same jobs, and a run goes on while no page is open.
The browser remembers which job it had open (local storage and ``?job=`` in the address) and reopens it.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import gradio as gr
import numpy as np

from rdevos import InputError, RDEVOSError
from rdevos_web import canvas_js
from rdevos_web.drawing import apply_stroke, overlay
from rdevos_web.jobs import (ACCEPTED_EXTENSIONS, Job, JobInfo, JobManager, JobStatus, ObjectInfo,
                             RunSettings, Upload, WorkFolder, plural, safe_name)
from rdevos_web.prompting import PromptService, PromptState

logger = logging.getLogger(__name__)

__all__ = ["build_app", "RESOLUTIONS", "TOOLS"]

#: Choices of the processing size (short side in pixels, or the frames' own size).
RESOLUTIONS = ["480", "360", "240", "native"]
#: Tools of the canvas.
TOOLS = ["Box / click", "Brush", "Eraser"]
_MAX_CELLS = 300  # timeline cells (frames are grouped beyond this)
_MAX_STROKE_POINTS = 20_000  # a brush stroke's points (the page sends one every 2 screen pixels)

_HELP = """\
1. Upload a video (mp4, mov, webm, ...), a zip of frames or frame images, or open the sample clip.
2. Pick or add an object, then on any frame **drag a box** around it: its mask appears at once. **Click** to add to
   the mask, **shift-click or right-click** to remove from it. The *Brush* and *Eraser* touch up the mask; or upload
   a mask PNG (a label map: 0 = background, 1, 2, ... = objects). Every change is saved as you go.
3. *Run* segments the video in the background: the page can be closed or reloaded meanwhile.
4. Scrub through the results (the timeline marks frames with your masks and frames with results). To fix a frame,
   correct it, choose *Start: this frame* and run again.
5. *Prepare downloads* gives the masks (palette PNGs), an overlay video and per-object masks.

Keys: ← / → previous / next frame (shift: 10), Home / End, space play / pause, B box / click, D brush, E eraser,
N new object, 1-9 pick an object, Esc start the object's prompt afresh.
"""


def _now(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _singular(text: str) -> str:
    """Messages written elsewhere say "1 frames"; the page says "1 frame"."""
    import re

    return re.sub(r"(?<![\d.])1 frames\b", "1 frame", text)


def _status_text(info: JobInfo | None) -> str:
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
        parts.append(_singular(info.message))
    if info.status is JobStatus.DONE and info.done < info.total:
        parts.append(f"**warning:** {info.total - info.done} of the {plural(info.total, 'frame')} this run was to "
                     "segment have no result")
    return " · ".join(parts)


def _annotation_text(job: Job) -> str:
    ann = job.annotation_summary()
    if not ann:
        return "No mask yet: drag a box around an object on a frame (or upload a mask PNG)."
    items = [f"frame {i} (object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})" for i, ids in ann.items()]
    return "Masks on " + "; ".join(items)


def _timeline_html(job: Job, frame: int) -> str:
    """One cell per frame (or per group of frames): dark = a user mask, blue = a result, outlined = shown."""
    n = len(job.frame_names)
    ann = set(job.annotated_frames())
    res = job.result_frames()
    step = max(1, -(-n // _MAX_CELLS))
    cells = []
    for a in range(0, n, step):
        group = range(a, min(a + step, n))
        cls = "ann" if any(i in ann for i in group) else "res" if all(i in res for i in group) else ""
        if frame in group:
            cls += " cur"
        what = ("your mask" if cls.startswith("ann") else "result" if cls.startswith("res") else "nothing yet")
        span = f"frame {a}" if step == 1 else f"frames {a}-{group[-1]}"
        cells.append(f'<span class="rd-c {cls}" data-frame="{a}" title="{span}: {what}"></span>')
    legend = ('<div class="rd-legend"><span style="background:#444"></span>your mask'
              '<span style="background:#7fb3e6"></span>result<span style="background:#ddd"></span>not yet'
              f' · {len(ann)} with your mask, {len(res)} / {n} with results</div>')
    return f'<div id="rd-tl">{"".join(cells)}</div>{legend}'


def _objects_html(objects: list[ObjectInfo], selected: int | None) -> str:
    if not objects:
        return "<div class='rd-legend'>No object yet: drag a box on the frame, or press <b>Add object</b>.</div>"
    rows = []
    for o in objects:
        cls = "rd-obj" + (" sel" if o.id == selected else "") + (" hid" if o.hidden else "")
        rows.append(f'<div class="{cls}" data-obj="{o.id}" title="object {o.id}">'
                    f'<span class="rd-sw" style="background:{html.escape(o.colour)}"></span>'
                    f'<span>{o.id} · {html.escape(o.name)}{" (hidden)" if o.hidden else ""}</span></div>')
    return "".join(rows)


class _App:
    """What the event handlers share: job lookup and the views of a job."""

    def __init__(self, work: WorkFolder, manager: JobManager, prompts: PromptService) -> None:
        self.work = work
        self.manager = manager
        self.prompts = prompts

    # ------------------------------------------------------------------ helpers
    def choices(self) -> list[tuple[str, str]]:
        out = []
        for job in self.work.jobs():
            try:
                info = job.info()
            except RDEVOSError:
                continue
            out.append((f"{info.name} · {plural(info.num_frames, 'frame')} · {info.status.value} · "
                        f"{_now(info.created)}", job.id))
        return out

    def job(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        try:
            return self.work.job(job_id)
        except RDEVOSError:
            return None

    @staticmethod
    def frame_labels(job: Job, frame: int) -> tuple[np.ndarray | None, str]:
        """What the canvas shows on a frame: the user's mask, else the result, else nothing; and which."""
        ann = job.annotation(frame)
        if ann is not None:
            return ann, "your mask"
        res = job.result(frame)
        return res, ("result" if res is not None else "no mask yet")

    @staticmethod
    def draw(job: Job, image: np.ndarray, labels: np.ndarray | None, objects: list[ObjectInfo] | None = None
             ) -> np.ndarray:
        objects = job.objects() if objects is None else objects
        return overlay(image, labels, {o.id: o.colour for o in objects}, [o.id for o in objects if o.hidden])

    def canvas_image(self, job: Job, frame: int, prompt: PromptState | None = None) -> tuple[np.ndarray, str]:
        labels, what = self.frame_labels(job, frame)
        image = self.draw(job, job.frame(frame), labels)
        if prompt is not None and prompt.job == job.id and prompt.frame == frame:
            image = np.ascontiguousarray(image)
            if prompt.box is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
                cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
            r = max(2, round(min(image.shape[:2]) / 80))
            for x, y, pos in prompt.points:
                cv2.circle(image, (int(x), int(y)), r + 1, (0, 0, 0), -1)
                cv2.circle(image, (int(x), int(y)), r, (0, 220, 0) if pos else (255, 40, 40), -1)
        return image, what

    def result_image(self, job: Job, frame: int) -> np.ndarray:
        return self.draw(job, job.frame(frame), job.result(frame))

    def clamp(self, job: Job, frame: float | int) -> int:
        return int(min(max(int(frame), 0), len(job.frame_names) - 1))

    def frame_view(self, c: Any, job: Job, frame: int, prompt: PromptState | None = None) -> dict[Any, Any]:
        frame = self.clamp(job, frame)
        name = job.frame_names[frame]
        image, what = self.canvas_image(job, frame, prompt)
        return {
            c.canvas: gr.Image(value=image, label=f"Frame {frame} ({name}) · {what}"),
            c.frame: gr.Slider(value=frame),
            c.view: {"job": job.id, "frame": frame},
            c.annotations: _annotation_text(job),
            c.timeline: _timeline_html(job, frame),
        }

    def object_view(self, c: Any, job: Job | None, selected: int | None) -> dict[Any, Any]:
        objects = job.objects() if job is not None else []
        ids = [o.id for o in objects]
        if selected not in ids:
            selected = ids[0] if ids else None
        obj = next((o for o in objects if o.id == selected), None)
        return {
            c.objects: gr.Radio(choices=[(f"{o.id} · {o.name}", str(o.id)) for o in objects],
                                value=None if selected is None else str(selected)),
            c.object_list: _objects_html(objects, selected),
            c.obj_name: gr.Textbox(value=obj.name if obj else ""),
            c.obj_colour: gr.ColorPicker(value=obj.colour if obj else "#e6194b"),
            c.obj_hide: gr.Checkbox(value=obj.hidden if obj else False),
        }

    def job_view(self, c: Any, job: Job, frame: int = 0) -> dict[Any, Any]:
        info = job.info()
        out = self.frame_view(c, job, frame)
        preview = None
        if info.last_frame is not None and 0 <= info.last_frame < info.num_frames:
            preview = self.result_image(job, info.last_frame)
        out.update(self.object_view(c, job, None))
        out.update({
            c.job: gr.Dropdown(choices=self.choices(), value=job.id),
            c.frame: gr.Slider(minimum=0, maximum=max(info.num_frames - 1, 1), value=self.clamp(job, frame),
                               step=1, interactive=info.num_frames > 1,
                               label=f"Frame ({plural(info.num_frames, 'frame')}, {info.width}x{info.height})"),
            c.status: _status_text(info),
            c.preview: gr.Image(value=preview, label=f"Live preview: {info.name} (latest frame)"),
            c.tick: None,
            c.prompt: None,
            c.dl_masks: gr.DownloadButton(visible=False),
            c.dl_overlay: gr.DownloadButton(visible=False),
            c.dl_objects: gr.DownloadButton(visible=False),
        })
        return out

    def empty_view(self, c: Any, message: str) -> dict[Any, Any]:
        return {
            c.job: gr.Dropdown(choices=self.choices(), value=None), c.canvas: gr.Image(value=None, label="Frame"),
            c.frame: gr.Slider(minimum=0, maximum=1, value=0, label="Frame"), c.view: None,
            c.annotations: "", c.timeline: "", c.status: _status_text(None),
            c.preview: gr.Image(value=None, label="Live preview (latest frame)"), c.tick: None, c.prompt: None,
            c.dl_masks: gr.DownloadButton(visible=False), c.dl_overlay: gr.DownloadButton(visible=False),
            c.dl_objects: gr.DownloadButton(visible=False), c.message: message,
            **self.object_view(c, None, None),
        }

    def check_upload(self, files: list[dict[str, Any]]) -> str:
        """The message while an upload is on its way: what will be refused (type, size) is said at once."""
        names = [safe_name(str(f.get("name", ""))) for f in files]
        for f, name in zip(files, names, strict=True):
            if PurePosixPath(name).suffix.lower() not in ACCEPTED_EXTENSIONS:
                return (f"**Upload refused:** '{name}' is not an accepted file type; accepted are "
                        f"{', '.join(e.lstrip('.') for e in ACCEPTED_EXTENSIONS)}.")
            size = float(f.get("size") or 0)
            if size > self.work.max_upload_bytes:
                return (f"**Upload refused:** '{name}' is too large ({size / 2**20:.1f} MB); the upload limit is "
                        f"{self.work.max_upload_bytes / 2**20:.1f} MB.")
        return f"Uploading {', '.join(names)}…"


def build_app(work: WorkFolder, manager: JobManager, *, model_note: str = "",
              prompts: PromptService | None = None) -> gr.Blocks:
    """Build the Gradio app.

    Args:
        work: the work folder (jobs live there).
        manager: runs the jobs.
        model_note: shown under the model field (e.g. that the embedded default model is missing).
        prompts: turns boxes and clicks into masks (default: the embedded prompt model, loaded on first use).
    Returns:
        The ``gr.Blocks`` (call ``.queue().launch(...)`` on it, or use :func:`rdevos_web.serve`).
    """
    app = _App(work, manager, prompts or PromptService(device=manager.settings.device))
    settings = manager.settings
    with gr.Blocks(title="RDE-VOS", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        c = _Components()
        gr.Markdown("# RDE-VOS: segment objects through a video")
        with gr.Accordion("How it works", open=False):
            gr.Markdown(_HELP)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                c.upload = gr.File(label="Upload a video, a zip of frames or frame images", file_count="multiple",
                                   file_types=list(ACCEPTED_EXTENSIONS), elem_id="upload")
                c.sample = gr.Button("Open the sample clip (DAVIS bear)", elem_id="sample")
                c.job = gr.Dropdown(label="Jobs in the work folder", choices=app.choices(), value=None,
                                    elem_id="job", interactive=True)
                c.job_delete = gr.Button("Delete this job", elem_id="job-delete", size="sm")
                c.message = gr.Markdown(elem_id="message")
                gr.Markdown("**Objects**")
                c.object_list = gr.HTML(elem_id="object-list", js_on_load=None)
                c.objects = gr.Radio(label="Object to draw", choices=[], elem_id="objects")
                with gr.Row():
                    c.obj_add = gr.Button("Add object", elem_id="obj-add", size="sm")
                    c.obj_delete = gr.Button("Delete object", elem_id="obj-delete", size="sm", variant="stop")
                with gr.Row():
                    c.obj_name = gr.Textbox(label="Name", elem_id="obj-name", scale=3)
                    c.obj_rename = gr.Button("Rename", elem_id="obj-rename", size="sm", scale=1)
                with gr.Row():
                    c.obj_colour = gr.ColorPicker(label="Colour", elem_id="obj-colour")
                    c.obj_hide = gr.Checkbox(label="Hide", elem_id="obj-hide")
                with gr.Accordion("Model and settings", open=bool(model_note)):
                    c.model = gr.Textbox(label="Model", value=settings.model or "", elem_id="model",
                                         placeholder="embedded default model (rdevos-lite2); or a checkpoint path")
                    if model_note:
                        gr.Markdown(model_note, elem_id="model-note")
                    c.device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value=settings.device, label="Device")
                    res = "native" if settings.resolution is None else str(settings.resolution)
                    c.resolution = gr.Dropdown(RESOLUTIONS if res in RESOLUTIONS else [res, *RESOLUTIONS],
                                               value=res, label="Processing size (short side)")
            with gr.Column(scale=3):
                with gr.Row():
                    c.frame = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Frame", elem_id="frame",
                                        scale=5)
                    c.play = gr.Button("▶ Play", elem_id="play", scale=1, min_width=80)
                c.canvas = gr.Image(label="Frame", interactive=False, elem_id="canvas", height=460, format="jpeg",
                                    buttons=[], show_label=True)
                c.timeline = gr.HTML(elem_id="timeline", js_on_load=None)
                with gr.Row():
                    c.tool = gr.Radio(TOOLS, value=TOOLS[0], label="Tool", elem_id="tool", scale=3,
                                      interactive=True)
                    c.brush_size = gr.Slider(1, 60, value=8, step=1, label="Brush radius (pixels of the frame)",
                                             elem_id="brush-size", scale=2, interactive=True)
                with gr.Row():
                    c.clear = gr.Button("Remove this frame's mask", elem_id="clear", size="sm")
                    c.mask_upload = gr.UploadButton("Upload a mask PNG for this frame", file_types=[".png"],
                                                    elem_id="mask-upload", size="sm")
                c.annotations = gr.Markdown(elem_id="annotations")
        with gr.Row():
            c.direction = gr.Radio(["forward", "backward", "both"], value="forward", label="Direction",
                                   elem_id="direction")
            c.start = gr.Radio(["first mask", "this frame"], value="first mask", label="Start", elem_id="start")
            c.run = gr.Button("Run", variant="primary", elem_id="run")
            c.cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
        with gr.Row():
            with gr.Column(scale=2):
                c.status = gr.Markdown("No job open.", elem_id="status")
                c.prepare = gr.Button("Prepare downloads", elem_id="prepare")
                with gr.Row():
                    c.dl_masks = gr.DownloadButton("Masks (palette PNGs, zip)", visible=False, elem_id="dl-masks")
                    c.dl_overlay = gr.DownloadButton("Overlay video (mp4)", visible=False, elem_id="dl-overlay")
                    c.dl_objects = gr.DownloadButton("Per-object masks (zip)", visible=False, elem_id="dl-objects")
            c.preview = gr.Image(label="Live preview (latest frame)", interactive=False, elem_id="preview",
                                 height=240, format="jpeg")
        c.cmd = gr.Textbox(visible="hidden", elem_id="cmd")
        c.cmd_go = gr.Button("command", visible="hidden", elem_id="cmd-go")
        c.saved_job = gr.Textbox(visible="hidden", elem_id="saved-job")
        # Server-side, so that queued canvas commands each start from the view the one before left (a page value
        # would be read when the key is pressed). After a server restart the page reloads and reopens its job.
        c.view = gr.State(None)
        c.tick = gr.State(None)
        c.prompt = gr.State(None)
        c.playing = gr.State(False)
        timer = gr.Timer(1.0)
        player = gr.Timer(0.3, active=False)

        object_outputs = [c.objects, c.object_list, c.obj_name, c.obj_colour, c.obj_hide]
        frame_outputs = [c.canvas, c.frame, c.view, c.annotations, c.timeline, c.message, c.prompt]
        view_outputs = [c.job, *frame_outputs, c.status, c.preview, c.tick, c.dl_masks, c.dl_overlay,
                        c.dl_objects, *object_outputs]

        def selected(value: str | None) -> int | None:
            try:
                return int(value) if value else None
            except ValueError:
                return None

        def current(view: dict[str, Any] | None) -> tuple[Job | None, int]:
            job = app.job((view or {}).get("job"))
            return job, int((view or {}).get("frame", 0))

        def on_load(saved: str | None) -> dict[Any, Any]:
            job = app.job((saved or "").strip())
            if job is not None:
                return {**app.job_view(c, job), c.message: f"Reopened your job **{job.info().name}**."}
            n = len(work.jobs())
            lost = " The job this browser had open no longer exists." if saved else ""
            more = (f" or choose one of the {plural(n, 'job')} in the list" if n else "")
            return app.empty_view(c, f"No job open:{lost} upload a video, open the sample clip{more}.")

        def on_upload(files: list[str] | None) -> dict[Any, Any]:
            if not files:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            try:
                job = work.create_job([Upload(Path(f), Path(f).name) for f in files])
            except RDEVOSError as e:
                return {c.message: f"**Upload refused:** {e}", c.upload: None}
            info = job.info()
            return {**app.job_view(c, job), c.upload: None,
                    c.message: f"Opened **{info.name}**: {plural(info.num_frames, 'frame')} of "
                               f"{info.width}x{info.height}. Now drag a box around an object."}

        def on_sample() -> dict[Any, Any]:
            try:
                job, reused = work.open_sample_job()
            except RDEVOSError as e:
                return {c.message: f"**Error:** {e}"}
            note = ("Opened the sample clip (the job already in the work folder)" if reused else
                    "Opened the sample clip with its first-frame mask")
            return {**app.job_view(c, job), c.message: f"{note}; press Run."}

        def on_select(job_id: str | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return app.empty_view(c, "That job no longer exists.")
            return {**app.job_view(c, job), c.message: ""}

        def on_job_delete(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.message: "No job open."}
            name = job.info().name
            try:
                manager.delete(job.id)
            except RDEVOSError as e:
                return {c.message: f"**Not deleted:** {e}"}
            return app.empty_view(c, f"Deleted the job **{name}** and its files.")

        def on_frame(frame: float, view: dict[str, Any] | None, prompt: PromptState | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.tick: gr.skip()}
            return {**app.frame_view(c, job, int(frame), prompt), c.message: ""}

        def prompt_or_stroke(job: Job, frame: int, obj_value: str | None, prompt: PromptState | None,
                             cmd: dict[str, Any]) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            if manager.is_active(job.id):
                raise InputError("a run of this job is in progress: wait for it or cancel it before changing masks")
            obj_id = selected(obj_value)
            if obj_id is None or obj_id not in {o.id for o in job.objects()}:
                if cmd["type"] != "box":
                    return {c.message: "Add an object first (or drag a box: that adds one)."}
                obj_id = job.add_object().id
                out.update(app.object_view(c, job, obj_id))
            t0 = time.perf_counter()
            if cmd["type"] == "stroke":
                info = job.info()
                base, _ = app.frame_labels(job, frame)
                points = list(cmd.get("points") or [])[:_MAX_STROKE_POINTS]
                radius = min(max(float(cmd.get("radius") or 8), 1.0), 500.0)
                labels = apply_stroke(base, (info.height, info.width), points, radius, obj_id,
                                      erase=bool(cmd.get("erase")))
                if labels.any():
                    job.set_annotation(frame, labels)
                    note = f"Saved the mask of frame {frame}."
                else:
                    removed = job.remove_annotation(frame)
                    note = f"Frame {frame} has no object left{': its mask was removed' if removed else ''}."
            elif cmd["type"] == "box":
                prompt, _ = app.prompts.apply(job, prompt, frame, obj_id, box=tuple(cmd["box"]))
                note = f"Box prompt for object {obj_id} on frame {frame}: click to add (+) or shift-click to remove."
            else:
                prompt, _ = app.prompts.apply(job, prompt, frame, obj_id,
                                              point=(float(cmd["x"]), float(cmd["y"]), bool(cmd.get("positive"))))
                note = f"{'Added to' if cmd.get('positive') else 'Removed from'} object {obj_id} on frame {frame}."
            logger.debug("%s on frame %d: %.2f s", cmd["type"], frame, time.perf_counter() - t0)
            return {**out, **app.frame_view(c, job, frame, prompt), c.message: note, c.prompt: prompt}

        def on_cmd(raw: str | None, view: dict[str, Any] | None, obj_value: str | None,
                   prompt: PromptState | None) -> dict[Any, Any]:
            try:
                cmd = json.loads(raw or "{}")
                kind = cmd.get("type")
            except (ValueError, AttributeError):
                return {c.tick: gr.skip()}
            if kind == "upload":
                return {c.message: app.check_upload(list(cmd.get("files") or []))}
            job, frame = current(view)
            if job is None:
                return {c.message: "Upload a video first."}
            try:
                if kind in ("box", "point", "stroke"):
                    return prompt_or_stroke(job, frame, obj_value, prompt, cmd)
                if kind == "frame":
                    return {**app.frame_view(c, job, min(int(cmd["frame"]), 10**9), prompt), c.message: ""}
                if kind == "step":
                    return {**app.frame_view(c, job, frame + int(cmd["delta"]), prompt), c.message: ""}
                if kind == "reset":
                    return {**app.frame_view(c, job, frame), c.prompt: None,
                            c.message: "The next box or click starts a new prompt."}
                if kind == "object":
                    objects = job.objects()
                    if "index" in cmd:
                        k = int(cmd["index"])
                        obj = objects[k] if 0 <= k < len(objects) else None
                    else:
                        obj = next((o for o in objects if o.id == int(cmd["id"])), None)
                    if obj is None:
                        return {c.tick: gr.skip()}
                    return {**app.object_view(c, job, obj.id), c.prompt: None,
                            c.message: f"Drawing object {obj.id} ({obj.name})."}
            except RDEVOSError as e:
                return {c.message: f"**Not applied:** {e}"}
            except (KeyError, TypeError, ValueError) as e:
                logger.warning("malformed command from the page %r: %s", (raw or "")[:200], e)
                return {c.message: "That input was not understood; try again."}
            except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
                logger.exception("job %s: %s on frame %d failed", job.id, kind, frame)
                return {c.message: "**Not applied:** internal error (details in the server log)."}
            return {c.tick: gr.skip()}

        def on_clear(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None:
                return {c.tick: gr.skip()}
            removed = job.remove_annotation(frame)
            return {**app.frame_view(c, job, frame),
                    c.message: f"Removed the mask of frame {frame}." if removed else f"Frame {frame} has no mask."}

        def on_mask_upload(file: str | None, view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None or not file:
                return {c.message: "Upload a video first."}
            try:
                ids = job.set_annotation_upload(frame, file, Path(file).name)
            except RDEVOSError as e:
                return {c.message: f"**Mask refused:** {e}"}
            return {**app.frame_view(c, job, frame), **app.object_view(c, job, ids[0]),
                    c.message: f"Mask of frame {frame} set (object{'s' if len(ids) > 1 else ''} "
                               f"{', '.join(map(str, ids))})."}

        # ---------------------------------------------------------------- objects
        def on_obj_select(view: dict[str, Any] | None, value: str | None) -> dict[Any, Any]:
            job, _ = current(view)
            return {**app.object_view(c, job, selected(value)), c.prompt: None}

        def on_obj_add(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.message: "Upload a video first."}
            obj = job.add_object()
            return {**app.object_view(c, job, obj.id), c.prompt: None,
                    c.message: f"Added {obj.name}: drag a box around it on a frame."}

        def obj_change(view: dict[str, Any] | None, value: str | None, **change: Any) -> dict[Any, Any]:
            job, frame = current(view)
            obj_id = selected(value)
            if job is None or obj_id is None:
                return {c.message: "Pick an object first."}
            try:
                obj = job.update_object(obj_id, **change)
            except RDEVOSError as e:
                return {**app.object_view(c, job, obj_id), c.message: f"**Not changed:** {e}"}
            return {**app.object_view(c, job, obj.id), **app.frame_view(c, job, frame),
                    c.message: f"Object {obj.id} is now {obj.name}{' (hidden)' if obj.hidden else ''}."}

        def on_obj_delete(view: dict[str, Any] | None, value: str | None) -> dict[Any, Any]:
            job, frame = current(view)
            obj_id = selected(value)
            if job is None or obj_id is None:
                return {c.message: "Pick an object first."}
            if manager.is_active(job.id):
                return {c.message: "**Not deleted:** a run of this job is in progress; cancel it first."}
            name = next((o.name for o in job.objects() if o.id == obj_id), f"object {obj_id}")
            n = job.delete_object(obj_id)
            return {**app.object_view(c, job, None), **app.frame_view(c, job, frame), c.prompt: None,
                    c.message: f"Deleted {name} (removed from {plural(n, 'mask')})."}

        # ---------------------------------------------------------------- runs
        def on_run(view: dict[str, Any] | None, direction: str, start: str, model: str, device: str,
                   resolution: str) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None:
                return {c.message: "Upload a video first."}
            try:
                run_settings = RunSettings(model=(model or "").strip() or None, device=device or "auto",
                                           resolution=None if resolution == "native" else int(resolution))
                info = manager.submit(job.id, direction=direction, start=frame if start == "this frame" else None,
                                      settings=run_settings)
            except RDEVOSError as e:
                return {c.message: f"**Cannot run:** {e}", c.annotations: _annotation_text(job)}
            return {c.status: _status_text(info), c.message: "", c.annotations: _annotation_text(job), c.tick: None}

        def on_cancel(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.tick: gr.skip()}
            return {c.status: _status_text(manager.cancel(job.id)), c.message: ""}

        def on_tick(view: dict[str, Any] | None, last: list[Any] | None) -> dict[Any, Any]:
            job, frame = current(view)  # the view, not the dropdown: never a job the page has left
            if job is None:
                return {c.tick: gr.skip()}
            try:
                info = job.info()
            except RDEVOSError:
                return {c.tick: gr.skip()}
            key = [job.id, info.status.value, info.done, info.last_frame, info.message]
            if key == last:
                return {c.tick: gr.skip()}
            out: dict[Any, Any] = {c.status: _status_text(info), c.tick: key}
            fresh = last is None or last[0] != job.id
            if info.last_frame is not None and 0 <= info.last_frame < info.num_frames and (
                    fresh or info.last_frame != last[3]):
                out[c.preview] = app.result_image(job, info.last_frame)
            if fresh or info.done != last[2]:
                out[c.timeline] = _timeline_html(job, app.clamp(job, frame))
                if job.annotation(app.clamp(job, frame)) is None:
                    image, what = app.canvas_image(job, app.clamp(job, frame))
                    out[c.canvas] = gr.Image(value=image,
                                             label=f"Frame {app.clamp(job, frame)} "
                                                   f"({job.frame_names[app.clamp(job, frame)]}) · {what}")
            if not fresh and last[1] != key[1]:
                out[c.job] = gr.Dropdown(choices=app.choices(), value=job.id)
                out[c.message] = ""  # a message about the run before is stale now
            return out

        def on_play(view: dict[str, Any] | None, playing: bool) -> dict[Any, Any]:
            job, _ = current(view)
            playing = bool(job is not None and not playing)
            return {player: gr.Timer(active=playing), c.playing: playing,
                    c.play: gr.Button("⏸ Pause" if playing else "▶ Play")}

        def on_player(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None or frame >= len(job.frame_names) - 1:
                return {player: gr.Timer(active=False), c.playing: False, c.play: gr.Button("▶ Play")}
            return app.frame_view(c, job, frame + 1)

        def on_prepare(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.message: "Upload a video first."}
            try:
                paths = job.export_masks_zip(), job.export_overlay(), job.export_objects_zip()
            except RDEVOSError as e:
                return {c.message: f"**Export failed:** {e}"}
            partial = " (run in progress: partial results)" if manager.is_active(job.id) else ""
            return {c.dl_masks: gr.DownloadButton(value=str(paths[0]), visible=True),
                    c.dl_overlay: gr.DownloadButton(value=str(paths[1]), visible=True),
                    c.dl_objects: gr.DownloadButton(value=str(paths[2]), visible=True),
                    c.message: f"Downloads ready{partial}."}

        # Each event lists only the components it may change: an output shows a loading state while its event runs.
        demo.load(None, js=canvas_js.SETUP)
        demo.load(on_load, inputs=[c.saved_job], outputs=view_outputs, js=canvas_js.SAVED_JOB)
        c.job.change(None, inputs=[c.job], js=canvas_js.REMEMBER_JOB)
        c.upload.upload(on_upload, inputs=[c.upload], outputs=[*view_outputs, c.upload])
        c.sample.click(on_sample, outputs=view_outputs)
        c.job.input(on_select, inputs=[c.job], outputs=view_outputs)
        c.job_delete.click(on_job_delete, inputs=[c.view], outputs=view_outputs)
        c.frame.input(on_frame, inputs=[c.frame, c.view, c.prompt], outputs=frame_outputs,
                      trigger_mode="always_last", show_progress="hidden")
        c.cmd_go.click(on_cmd, inputs=[c.cmd, c.view, c.objects, c.prompt], outputs=[*frame_outputs, *object_outputs],
                       js=canvas_js.TAKE_COMMAND, trigger_mode="multiple", show_progress="hidden",
                       concurrency_limit=1)  # in order: each command starts from the view the one before left
        c.clear.click(on_clear, inputs=[c.view], outputs=frame_outputs)
        c.mask_upload.upload(on_mask_upload, inputs=[c.mask_upload, c.view], outputs=[*frame_outputs,
                                                                                       *object_outputs])
        c.objects.input(on_obj_select, inputs=[c.view, c.objects], outputs=[*object_outputs, c.prompt])
        c.obj_add.click(on_obj_add, inputs=[c.view], outputs=[*object_outputs, c.prompt, c.message])
        c.obj_rename.click(lambda v, o, n: obj_change(v, o, name=n), inputs=[c.view, c.objects, c.obj_name],
                           outputs=[*object_outputs, *frame_outputs])
        c.obj_name.submit(lambda v, o, n: obj_change(v, o, name=n), inputs=[c.view, c.objects, c.obj_name],
                          outputs=[*object_outputs, *frame_outputs])
        c.obj_colour.input(lambda v, o, col: obj_change(v, o, colour=col), inputs=[c.view, c.objects, c.obj_colour],
                           outputs=[*object_outputs, *frame_outputs], trigger_mode="always_last")
        c.obj_hide.input(lambda v, o, h: obj_change(v, o, hidden=h), inputs=[c.view, c.objects, c.obj_hide],
                         outputs=[*object_outputs, *frame_outputs])
        c.obj_delete.click(on_obj_delete, inputs=[c.view, c.objects], outputs=[*object_outputs, *frame_outputs])
        c.run.click(on_run, inputs=[c.view, c.direction, c.start, c.model, c.device, c.resolution],
                    outputs=[c.status, c.message, c.annotations, c.tick])
        c.cancel.click(on_cancel, inputs=[c.view], outputs=[c.status, c.message, c.tick])
        timer.tick(on_tick, inputs=[c.view, c.tick],
                   outputs=[c.status, c.preview, c.timeline, c.canvas, c.job, c.message, c.tick],
                   show_progress="hidden")
        c.play.click(on_play, inputs=[c.view, c.playing], outputs=[player, c.playing, c.play])
        player.tick(on_player, inputs=[c.view], outputs=[*frame_outputs, player, c.playing, c.play],
                    show_progress="hidden")
        c.prepare.click(on_prepare, inputs=[c.view], outputs=[c.dl_masks, c.dl_overlay, c.dl_objects, c.message,
                                                              c.tick])
    return demo


class _Components:
    """Holder of the components the handlers refer to."""

    upload: Any
    sample: Any
    job: Any
    job_delete: Any
    message: Any
    object_list: Any
    objects: Any
    obj_add: Any
    obj_delete: Any
    obj_name: Any
    obj_rename: Any
    obj_colour: Any
    obj_hide: Any
    model: Any
    device: Any
    resolution: Any
    frame: Any
    play: Any
    canvas: Any
    timeline: Any
    tool: Any
    brush_size: Any
    clear: Any
    mask_upload: Any
    annotations: Any
    direction: Any
    start: Any
    run: Any
    cancel: Any
    status: Any
    prepare: Any
    dl_masks: Any
    dl_overlay: Any
    dl_objects: Any
    preview: Any
    cmd: Any
    cmd_go: Any
    saved_job: Any
    view: Any
    tick: Any
    prompt: Any
    playing: Any
