"""Gradio UI: upload a video, mark objects with a box, clicks or the brush, run in the background, watch, download.

The page renders the job's record (:mod:`rdevos_web.store`), the single source of truth: every handler changes the
record through :class:`~rdevos_web.store.Job` and renders what it then holds, so a reload, a second tab or a new
browser shows the same job, its run settings included, and a run goes on while no page is open. A timer compares
the record's version with the one the page shows and renders again what another tab (or a run) changed. The
page's own state is only where it is: the open job and frame, the object being drawn, the prompt so far, the zoom.
The browser remembers which job it had open (local storage and ``?job=`` in the address) and reopens it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import gradio as gr
import numpy as np

from rdevos import InputError, RDEVOSError
from rdevos_web import canvas_js
from rdevos_web.drawing import overlay, stroke_mask
from rdevos_web.exports import current_exports, prepare
from rdevos_web.prompting import PromptService, PromptState
from rdevos_web.runner import JobManager, available_devices, model_problem
from rdevos_web.store import DIRECTIONS, START_MODES, Job, JobInfo, JobSettings, plural, safe_name
from rdevos_web.uploads import ACCEPTED_EXTENSIONS, Upload, WorkFolder
from rdevos_web.views import (annotation_text, canvas_html, downloads_html, objects_html, playback_frame,
                              preview_html, status_text, timeline_html, when)

logger = logging.getLogger(__name__)

__all__ = ["build_app", "RESOLUTIONS", "TOOLS", "CACHE_LIMITS"]

#: Choices of the processing size (short side in pixels, or the frames' own size).
RESOLUTIONS = ["480", "360", "240", "native"]
#: Tools of the canvas.
TOOLS = ["Box / click", "Brush", "Eraser", "Pan"]
#: Gradio's upload cache (uploads only: frames and downloads never go through it): (every, older than) seconds.
CACHE_LIMITS = (600, 3600)
_MAX_STROKE_POINTS = 20_000  # a brush stroke's points (the page sends one every 2 screen pixels)
_MAX_PLAYBACK_FPS = 30.0

_HELP = """\
1. Upload a video (mp4, mov, webm, ...), a zip of frames or frame images, or open the sample clip.
2. Pick or add an object, then on any frame **drag a box** around it: its mask appears at once. **Click** to add to
   the mask, **shift-click or right-click** to remove from it. The *Brush* and *Eraser* touch up the mask; or upload
   a mask PNG (a label map: 0 = background, 1, 2, ... = objects). Only the object you draw changes; every change is
   saved as you go and can be undone (Ctrl+Z) and redone (Ctrl+Shift+Z).
3. *Run* segments the video in the background: the page can be closed or reloaded meanwhile. The run settings
   (direction, start, model, processing size) belong to the job and are kept with it.
4. Scrub through the results (the timeline marks frames with your masks and frames with results; results are
   marked *out of date* when masks changed after the run). To fix a frame, correct it, choose *Start: this frame*
   and run again.
5. *Prepare downloads* gives the masks (palette PNGs), an overlay video in the page's colours, per-object masks and
   a COCO JSON file (run-length encoded masks, the objects' names as categories) for CVAT or Label Studio.

Keys: ← / → previous / next frame (shift: 10), Home / End, space play / pause, B box / click, D brush, E eraser,
H pan, + / − zoom, 0 fit to the window (the mouse wheel zooms too; drag with the middle button to pan),
N new object, 1-9 pick an object, Esc start the object's prompt afresh, Ctrl+Z undo, Ctrl+Shift+Z redo.
"""


def _draw(job: Job, image: np.ndarray, labels: np.ndarray | None, info: JobInfo) -> np.ndarray:
    objects = info.object_list
    return overlay(image, labels, {o.id: o.colour for o in objects}, [o.id for o in objects if o.hidden])


class _App:
    """What the event handlers share: job lookup and the views of a job."""

    def __init__(self, work: WorkFolder, manager: JobManager, prompts: PromptService) -> None:
        self.work = work
        self.manager = manager
        self.prompts = prompts
        self.devices = available_devices()

    # ------------------------------------------------------------------ helpers
    def choices(self) -> list[tuple[str, str]]:
        out = []
        for job in self.work.jobs():
            try:
                info = job.info()
            except RDEVOSError:
                continue
            out.append((f"{info.name} · {plural(info.num_frames, 'frame')} · {info.status.value} · "
                        f"{when(info.created)}", job.id))
        return out

    def job(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        try:
            return self.work.job(job_id)
        except RDEVOSError:
            return None

    @staticmethod
    def clamp(info: JobInfo, frame: float | int) -> int:
        return int(min(max(int(frame), 0), info.num_frames - 1))

    @staticmethod
    def seen(job: Job, info: JobInfo) -> list[Any]:
        """What the page has rendered of the job: the timer renders again when the record differs."""
        return [job.id, info.version, info.status.value, info.done, info.last_frame, info.message]

    def canvas(self, job: Job, info: JobInfo, frame: int, prompt: PromptState | None = None) -> str:
        labels, what = job.shown(frame, info)
        if info.results_stale and "result" in what:
            what += " (out of date)"
        image = _draw(job, job.frame(frame), labels, info)
        if prompt is not None and prompt.job == job.id and prompt.frame == frame:
            image = np.ascontiguousarray(image)
            if prompt.box is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
                cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
            r = max(2, round(min(image.shape[:2]) / 80))
            for x, y, pos in prompt.points:
                cv2.circle(image, (int(x), int(y)), r + 1, (0, 0, 0), -1)
                cv2.circle(image, (int(x), int(y)), r, (0, 220, 0) if pos else (255, 40, 40), -1)
        return canvas_html(image, f"Frame {frame} ({job.frame_names[frame]}) · {what}", frame)

    def preview(self, job: Job, info: JobInfo) -> str:
        last = info.last_frame
        if last is None or not 0 <= last < info.num_frames or job.result(last) is None:
            return preview_html(None, "Live preview: the latest frame of a run shows here.")
        image = _draw(job, job.frame(last), job.result(last), info)
        return preview_html(image, f"Live preview: {info.name}, frame {last}")

    def frame_view(self, c: Any, job: Job, frame: int, prompt: PromptState | None = None,
                   info: JobInfo | None = None) -> dict[Any, Any]:
        """The frame and everything that depends on the job's version (masks, status, downloads, undo/redo)."""
        info = info or job.info()
        frame = self.clamp(info, frame)
        undo, redo = job.history()
        files = current_exports(job, info)
        return {
            c.canvas: self.canvas(job, info, frame, prompt),
            c.frame: gr.Slider(value=frame),
            c.view: {"job": job.id, "frame": frame},
            c.annotations: annotation_text(job, info),
            c.timeline: timeline_html(job, info, frame),
            c.status: status_text(info),
            c.downloads: downloads_html(files, info, partial=files is not None and info.active),
            c.undo: gr.Button(interactive=undo is not None and not info.active),
            c.redo: gr.Button(interactive=redo is not None and not info.active),
            c.tick: self.seen(job, info),
        }

    def object_view(self, c: Any, job: Job | None, selected: int | None, info: JobInfo | None = None
                    ) -> dict[Any, Any]:
        objects = [] if job is None else sorted((info or job.info()).object_list, key=lambda o: o.id)
        ids = [o.id for o in objects]
        if selected not in ids:
            selected = ids[0] if ids else None
        obj = next((o for o in objects if o.id == selected), None)
        return {
            c.selected: selected,
            c.object_list: objects_html(objects, selected),
            c.obj_name: gr.Textbox(value=obj.name if obj else ""),
            c.obj_colour: gr.ColorPicker(value=obj.colour if obj else "#e6194b"),
            c.picker: {"obj": obj.id, "colour": obj.colour} if obj else None,
            c.obj_hide: gr.Checkbox(value=obj.hidden if obj else False),
        }

    def settings_view(self, c: Any, settings: JobSettings) -> dict[Any, Any]:
        res = "native" if settings.resolution is None else str(settings.resolution)
        devices = self.devices if settings.device in self.devices else [*self.devices, settings.device]
        return {
            c.direction: gr.Radio(value=settings.direction),
            c.start: gr.Radio(value=settings.start),
            c.model: gr.Textbox(value=settings.model or ""),
            c.device: gr.Dropdown(choices=devices, value=settings.device),
            c.resolution: gr.Dropdown(choices=RESOLUTIONS if res in RESOLUTIONS else [res, *RESOLUTIONS],
                                      value=res),
        }

    def job_view(self, c: Any, job: Job, frame: int = 0, selected: int | None = None) -> dict[Any, Any]:
        """Everything the page shows of a job (opening it, or after another tab changed it)."""
        info = job.info()
        frame = self.clamp(info, frame)
        out = self.frame_view(c, job, frame, info=info)
        out.update(self.object_view(c, job, selected, info))
        out.update(self.settings_view(c, self.manager.job_settings(job)))
        out.update({
            c.job: gr.Dropdown(choices=self.choices(), value=job.id),
            c.frame: gr.Slider(minimum=0, maximum=max(info.num_frames - 1, 1), value=frame, step=1,
                               interactive=info.num_frames > 1,
                               label=f"Frame ({plural(info.num_frames, 'frame')}, {info.width}x{info.height}, "
                                     f"{info.fps:g} fps)"),
            c.preview: self.preview(job, info),
            c.prompt: None,
        })
        return out

    def empty_view(self, c: Any, message: str) -> dict[Any, Any]:
        return {
            c.job: gr.Dropdown(choices=self.choices(), value=None),
            c.canvas: "<div class='rd-head'>Frame</div><div class='rd-view rd-empty'></div>",
            c.frame: gr.Slider(minimum=0, maximum=1, value=0, label="Frame"), c.view: None,
            c.annotations: "", c.timeline: "", c.status: status_text(None), c.downloads: "",
            c.preview: preview_html(None, "Live preview: the latest frame of a run shows here."),
            c.tick: None, c.prompt: None, c.message: message,
            c.undo: gr.Button(interactive=False), c.redo: gr.Button(interactive=False),
            **self.object_view(c, None, None),
            **self.settings_view(c, self.manager.defaults),
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
    defaults = manager.defaults
    with gr.Blocks(title="RDE-VOS", analytics_enabled=False, delete_cache=CACHE_LIMITS, fill_width=True) as demo:
        c = _Components()
        with gr.Row(elem_id="rd-top"):
            with gr.Column(scale=1, min_width=250, elem_id="rd-left"):
                gr.Markdown("**RDE-VOS** · segment objects through a video", elem_id="rd-title")
                c.upload = gr.File(label="Upload a video, a zip of frames or frame images", file_count="multiple",
                                   file_types=list(ACCEPTED_EXTENSIONS), elem_id="upload", height=90)
                c.sample = gr.Button("Open the sample clip (DAVIS bear)", elem_id="sample", size="sm")
                c.job = gr.Dropdown(label="Jobs in the work folder", choices=app.choices(), value=None,
                                    elem_id="job", interactive=True)
                c.job_delete = gr.Button("Delete this job", elem_id="job-delete", size="sm")
                c.message = gr.Markdown(elem_id="message")
                c.object_list = gr.HTML(elem_id="object-list", js_on_load=None, label="Objects")
                with gr.Row():
                    c.obj_add = gr.Button("Add object", elem_id="obj-add", size="sm")
                    c.obj_delete = gr.Button("Delete object", elem_id="obj-delete", size="sm", variant="stop")
                with gr.Row():
                    c.obj_name = gr.Textbox(label="Name", elem_id="obj-name", scale=3)
                    c.obj_rename = gr.Button("Rename", elem_id="obj-rename", size="sm", scale=1)
                with gr.Row():
                    c.obj_colour = gr.ColorPicker(label="Colour", elem_id="obj-colour")
                    c.obj_hide = gr.Checkbox(label="Hide", elem_id="obj-hide")
            with gr.Column(scale=4, min_width=420, elem_id="rd-centre"):
                with gr.Row(equal_height=True):
                    c.frame = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Frame", elem_id="frame",
                                        scale=6)
                    c.play = gr.Button("▶ Play", elem_id="play", scale=1, min_width=70, size="sm")
                c.canvas = gr.HTML(elem_id="canvas", js_on_load=None, padding=False)
                c.timeline = gr.HTML(elem_id="timeline", js_on_load=None)
                with gr.Row(equal_height=True, elem_id="rd-tools"):
                    c.tool = gr.Radio(TOOLS, value=TOOLS[0], label="Tool", elem_id="tool", scale=3, interactive=True)
                    c.brush_size = gr.Slider(1, 60, value=8, step=1, label="Brush radius (frame pixels)",
                                             elem_id="brush-size", scale=2, interactive=True)
                with gr.Row(equal_height=True, elem_id="rd-edit"):
                    c.undo = gr.Button("↶ Undo", elem_id="undo", size="sm", interactive=False, min_width=60)
                    c.redo = gr.Button("↷ Redo", elem_id="redo", size="sm", interactive=False, min_width=60)
                    gr.HTML(canvas_js.ZOOM_BAR, elem_id="zoom-bar", js_on_load=None, min_width=230)
                    c.clear = gr.Button("Remove this frame's mask", elem_id="clear", size="sm")
                    c.mask_upload = gr.UploadButton("Upload a mask PNG for this frame", file_types=[".png"],
                                                    elem_id="mask-upload", size="sm")
                c.annotations = gr.Markdown(elem_id="annotations")
            with gr.Column(scale=1, min_width=250, elem_id="rd-right"):
                c.direction = gr.Radio(list(DIRECTIONS), value=defaults.direction, label="Direction",
                                       elem_id="direction")
                c.start = gr.Radio(list(START_MODES), value=defaults.start, label="Start", elem_id="start")
                with gr.Row():
                    c.run = gr.Button("Run", variant="primary", elem_id="run", size="sm")
                    c.cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", size="sm")
                c.status = gr.Markdown("No job open.", elem_id="status")
                c.preview = gr.HTML(elem_id="preview", js_on_load=None)
                c.prepare = gr.Button("Prepare downloads", elem_id="prepare", size="sm")
                c.downloads = gr.HTML(elem_id="downloads", js_on_load=None)
                with gr.Accordion("Model and settings", open=bool(model_note)):
                    c.model = gr.Textbox(label="Model", value=defaults.model or "", elem_id="model",
                                         placeholder="embedded default model (rdevos-lite2); or a checkpoint path")
                    if model_note:
                        gr.Markdown(model_note, elem_id="model-note")
                    devices = app.devices if defaults.device in app.devices else [*app.devices, defaults.device]
                    c.device = gr.Dropdown(devices, value=defaults.device, label="Device", elem_id="device")
                    res = "native" if defaults.resolution is None else str(defaults.resolution)
                    c.resolution = gr.Dropdown(RESOLUTIONS if res in RESOLUTIONS else [res, *RESOLUTIONS],
                                               value=res, label="Processing size (short side)", elem_id="resolution")
                with gr.Accordion("How it works", open=False):
                    gr.Markdown(_HELP)
        c.cmd = gr.Textbox(visible="hidden", elem_id="cmd")
        c.cmd_go = gr.Button("command", visible="hidden", elem_id="cmd-go")
        c.saved_job = gr.Textbox(visible="hidden", elem_id="saved-job")
        c.confirmed = gr.Checkbox(visible="hidden", elem_id="confirmed")
        # Server-side, so that queued canvas commands each start from the view the one before left (a page value
        # would be read when the key is pressed). After a server restart the page reloads and reopens its job.
        c.view = gr.State(None)
        c.tick = gr.State(None)
        c.jobs_seen = gr.State(None)
        c.prompt = gr.State(None)
        c.playing = gr.State(None)
        c.picker = gr.State(None)  # the object the colour picker shows, and the colour it was given
        c.selected = gr.State(None)  # the object being drawn (its row in the object list is highlighted)
        timer = gr.Timer(1.0)
        c.player = gr.Timer(0.1, active=False)

        object_outputs = [c.selected, c.object_list, c.obj_name, c.obj_colour, c.picker, c.obj_hide]
        settings_outputs = [c.direction, c.start, c.model, c.device, c.resolution]
        frame_outputs = [c.canvas, c.frame, c.view, c.annotations, c.timeline, c.status, c.downloads, c.undo, c.redo,
                         c.tick, c.message, c.prompt]
        play_outputs = [c.player, c.playing, c.play]
        view_outputs = [c.job, *frame_outputs, c.preview, *object_outputs, *settings_outputs, *play_outputs]

        def handler(fn: Callable[..., dict[Any, Any]], outputs: list[Any]) -> Callable[..., dict[Any, Any]]:
            """``fn`` made safe for the page: an error becomes a message, never Gradio's red "Error", and only
            the event's outputs are returned (a handler returning another component is a bug, logged)."""
            allowed = set(outputs)

            @functools.wraps(fn)
            def run(*args: Any) -> dict[Any, Any]:
                try:
                    out = fn(*args)
                except RDEVOSError as e:
                    out = {c.message: f"**Not applied:** {e}"}
                except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
                    logger.exception("%s failed", fn.__name__)
                    out = {c.message: "**Not applied:** internal error (details in the server log)."}
                extra = [k for k in out if k not in allowed]
                if extra:
                    logger.error("%s returned components that are not its outputs: %s", fn.__name__, extra)
                    out = {k: v for k, v in out.items() if k in allowed}
                return out or {outputs[0]: gr.skip()}

            return run

        def selected(value: int | str | None) -> int | None:
            try:
                return int(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                return None

        def current(view: dict[str, Any] | None) -> tuple[Job | None, int]:
            job = app.job((view or {}).get("job"))
            return job, int((view or {}).get("frame", 0))

        no_job = "No job open: upload a video or open the sample clip first."

        def stop_playing() -> dict[Any, Any]:
            return {c.player: gr.Timer(active=False), c.playing: None, c.play: gr.Button("▶ Play")}

        # ---------------------------------------------------------------- jobs
        def on_load(saved: str | None) -> dict[Any, Any]:
            job = app.job((saved or "").strip())
            if job is not None:
                return {**app.job_view(c, job), **stop_playing(),
                        c.message: f"Reopened your job **{job.info().name}**."}
            n = len(work.jobs())
            lost = " The job this browser had open no longer exists." if saved else ""
            more = (f" or choose one of the {plural(n, 'job')} in the list" if n else "")
            return app.empty_view(c, f"No job open:{lost} upload a video, open the sample clip{more}.")

        def on_upload(files: list[str] | None) -> dict[Any, Any]:
            if not files:
                return {}
            try:
                job = work.create_job([Upload(Path(f), Path(f).name) for f in files])
            except RDEVOSError as e:
                return {c.message: f"**Upload refused:** {e}", c.upload: None}
            job.set_settings(defaults)  # the job's own settings from now on (the server's defaults)
            info = job.info()
            return {**app.job_view(c, job), **stop_playing(), c.upload: None,
                    c.message: f"Opened **{info.name}**: {plural(info.num_frames, 'frame')} of "
                               f"{info.width}x{info.height}. Now drag a box around an object."}

        def on_sample() -> dict[Any, Any]:
            job, reused = work.open_sample_job()
            if not reused:
                job.set_settings(defaults)
            note = ("Opened the sample clip (the job already in the work folder)" if reused else
                    "Opened the sample clip with its first-frame mask")
            return {**app.job_view(c, job), **stop_playing(), c.message: f"{note}; press Run."}

        def on_select(job_id: str | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return app.empty_view(c, "That job no longer exists.")
            return {**app.job_view(c, job), **stop_playing(), c.message: ""}

        def on_job_delete(view: dict[str, Any] | None, confirmed: bool) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {c.message: "No job open."}
            name = job.info().name
            if not confirmed:
                return {c.message: f"Kept the job **{name}**."}
            try:
                manager.delete(job.id)
            except RDEVOSError as e:
                return {c.message: f"**Not deleted:** {e}"}
            return {**app.empty_view(c, f"Deleted the job **{name}** and its files."), **stop_playing()}

        # ---------------------------------------------------------------- frames and masks
        def on_frame(frame: float, view: dict[str, Any] | None, prompt: PromptState | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {}
            return {**app.frame_view(c, job, int(frame), prompt), c.message: ""}

        def pick_object(job: Job, obj_value: int | None, cmd: dict[str, Any]) -> tuple[int | None, dict[Any, Any]]:
            obj_id = selected(obj_value)
            if obj_id is not None and obj_id in {o.id for o in job.objects()}:
                return obj_id, {}
            if cmd["type"] != "box":
                return None, {c.message: "Add an object first (or drag a box: that adds one)."}
            if job.info().active:
                raise InputError("a run of this job is in progress: wait for it or cancel it before changing masks")
            obj_id = job.add_object().id
            return obj_id, app.object_view(c, job, obj_id)

        def stroke(job: Job, frame: int, obj_id: int, cmd: dict[str, Any]) -> str:
            info = job.info()
            shown, _ = job.shown(frame, info)
            base = np.zeros((info.height, info.width), bool) if shown is None else shown == obj_id
            points = list(cmd.get("points") or [])[:_MAX_STROKE_POINTS]
            radius = min(max(float(cmd.get("radius") or 8), 1.0), 500.0)
            m = stroke_mask((info.height, info.width), points, radius)
            erase = bool(cmd.get("erase"))
            if not job.edit_object_mask(frame, obj_id, base & ~m if erase else base | m,
                                        what="eraser stroke" if erase else "brush stroke"):
                return f"The stroke changed nothing on frame {frame}."
            if job.annotation(frame) is None:
                return f"Frame {frame} has no object left: its mask was removed."
            return f"{'Erased from' if erase else 'Painted'} object {obj_id} on frame {frame}."

        def edit_command(job: Job, frame: int, obj_value: int | None, prompt: PromptState | None,
                         cmd: dict[str, Any]) -> dict[Any, Any]:
            obj_id, out = pick_object(job, obj_value, cmd)
            if obj_id is None:
                return out
            t0 = time.perf_counter()
            if cmd["type"] == "stroke":
                note = stroke(job, frame, obj_id, cmd)
            elif cmd["type"] == "box":
                prompt, changed = app.prompts.apply(job, prompt, frame, obj_id, box=tuple(cmd["box"]))
                note = f"Box prompt for object {obj_id} on frame {frame}: click to add (+) or shift-click to remove."
                if not changed:
                    note = f"Box prompt for object {obj_id} on frame {frame}: its mask is unchanged."
            else:
                positive = bool(cmd.get("positive"))
                before = prompt
                prompt, changed = app.prompts.apply(job, prompt, frame, obj_id,
                                                    point=(float(cmd["x"]), float(cmd["y"]), positive))
                note = f"{'Added to' if positive else 'Removed from'} object {obj_id} on frame {frame}."
                if not changed:
                    outside = before is not None and before.box is not None and not (
                        before.box[0] <= float(cmd["x"]) <= before.box[2]
                        and before.box[1] <= float(cmd["y"]) <= before.box[3])
                    note = (f"No change: that click left object {obj_id}'s mask on frame {frame} as it was"
                            + (" (clicks outside the box are ignored: drag a larger box)." if outside else "."))
            logger.debug("%s on frame %d: %.2f s", cmd["type"], frame, time.perf_counter() - t0)
            return {**out, **app.frame_view(c, job, frame, prompt), c.message: note, c.prompt: prompt}

        def history_command(job: Job, back: bool) -> dict[Any, Any]:
            undo, redo = job.history()
            what = undo if back else redo
            frame = job.undo() if back else job.redo()
            if frame is None:
                return {c.message: f"Nothing to {'undo' if back else 'redo'}."}
            return {**app.frame_view(c, job, frame), c.prompt: None,
                    c.message: f"{'Undid' if back else 'Redid'} the {what}."}

        def on_cmd(raw: str | None, view: dict[str, Any] | None, obj_value: int | None,
                   prompt: PromptState | None) -> dict[Any, Any]:
            try:
                cmd = json.loads(raw or "{}")
                kind = cmd.get("type")
            except (ValueError, AttributeError):
                return {}
            if kind == "upload":
                return {c.message: app.check_upload(list(cmd.get("files") or []))}
            job, frame = current(view)
            if job is None:
                return {c.message: no_job}
            try:
                if kind in ("box", "point", "stroke"):
                    return edit_command(job, frame, obj_value, prompt, cmd)
                if kind in ("undo", "redo"):
                    return history_command(job, kind == "undo")
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
                        missing = f"There is no object {k + 1}: this job has {plural(len(objects), 'object')}"
                    else:
                        obj = next((o for o in objects if o.id == int(cmd["id"])), None)
                        missing = f"There is no object {int(cmd['id'])}"
                    if obj is None:
                        return {c.message: f"{missing} (press N or Add object to add one)."}
                    return {**app.object_view(c, job, obj.id), c.prompt: None,
                            c.message: f"Drawing object {obj.id} ({obj.name})."}
            except (KeyError, TypeError, ValueError) as e:
                logger.warning("malformed command from the page %r: %s", (raw or "")[:200], e)
                return {c.message: "That input was not understood; try again."}
            return {}

        def on_clear(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None:
                return {c.message: no_job}
            removed = job.remove_annotation(frame)
            return {**app.frame_view(c, job, frame), c.prompt: None,
                    c.message: f"Removed the mask of frame {frame}." if removed else f"Frame {frame} has no mask."}

        def on_mask_upload(file: str | None, view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None or not file:
                return {c.message: no_job}
            try:
                ids = job.set_annotation_upload(frame, file, Path(file).name)
            except RDEVOSError as e:
                return {c.message: f"**Mask refused:** {e}"}
            return {**app.frame_view(c, job, frame), **app.object_view(c, job, ids[0]), c.prompt: None,
                    c.message: f"Mask of frame {frame} set (object{'s' if len(ids) > 1 else ''} "
                               f"{', '.join(map(str, ids))})."}

        # ---------------------------------------------------------------- objects
        def on_obj_add(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None:
                return {c.message: no_job}
            obj = job.add_object()
            return {**app.object_view(c, job, obj.id), **app.frame_view(c, job, frame), c.prompt: None,
                    c.message: f"Added {obj.name}: drag a box around it on a frame."}

        def obj_change(view: dict[str, Any] | None, value: int | str | None, **change: Any) -> dict[Any, Any]:
            job, frame = current(view)
            obj_id = selected(value)
            if job is None or obj_id is None:
                return {c.message: "Pick an object first."}
            try:
                obj = job.update_object(obj_id, **change)
            except RDEVOSError as e:
                return {**app.object_view(c, job, obj_id), c.message: f"**Not changed:** {e}"}
            return {**app.object_view(c, job, obj.id), **app.frame_view(c, job, frame),
                    c.message: f"Object {obj.id} is now {obj.name}{' (hidden)' if obj.hidden else ''} "
                               f"({obj.colour})."}

        def on_colour(view: dict[str, Any] | None, picker: dict[str, Any] | None, colour: str | None
                      ) -> dict[Any, Any]:
            """Any change of the picker's value: typed (Enter, Tab), picked, dragged. A value the page was given
            (another object selected, a change from another tab) is not an edit."""
            if not picker or not colour or _same_colour(picker["colour"], colour):
                return {}
            return obj_change(view, str(picker["obj"]), colour=colour)

        def on_obj_delete(view: dict[str, Any] | None, value: int | None, confirmed: bool) -> dict[Any, Any]:
            job, frame = current(view)
            obj_id = selected(value)
            if job is None or obj_id is None:
                return {c.message: "Pick an object first."}
            name = next((o.name for o in job.objects() if o.id == obj_id), f"object {obj_id}")
            if not confirmed:
                return {c.message: f"Kept {name}."}
            try:
                n = job.delete_object(obj_id)
            except RDEVOSError as e:
                return {c.message: f"**Not deleted:** {e}"}
            return {**app.object_view(c, job, None), **app.frame_view(c, job, frame), c.prompt: None,
                    c.message: f"Deleted {name} (removed from {plural(n, 'mask')})."}

        # ---------------------------------------------------------------- run settings and runs
        def settings_changes(direction: str, start: str, model: str, device: str, resolution: str
                             ) -> dict[str, Any]:
            try:
                res = None if resolution == "native" else int(resolution)
            except (TypeError, ValueError):
                raise InputError(f"processing size {resolution!r} is not a number of pixels") from None
            return {"direction": direction, "start": start, "model": (model or "").strip() or None,
                    "device": device or "auto", "resolution": res}

        def on_settings(view: dict[str, Any] | None, direction: str, start: str, model: str, device: str,
                        resolution: str) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {}
            settings = job.set_settings(defaults, **settings_changes(direction, start, model, device, resolution))
            problem = model_problem(settings.model)
            out: dict[Any, Any] = {c.tick: app.seen(job, job.info())}
            if problem:
                out[c.message] = f"**Model:** {problem}"
            elif settings.device not in app.devices:
                out[c.message] = f"**Device:** '{settings.device}' is not available on this server."
            return out

        def on_run(view: dict[str, Any] | None, direction: str, start: str, model: str, device: str,
                   resolution: str) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None:
                return {c.message: no_job}
            settings = job.set_settings(defaults, **settings_changes(direction, start, model, device, resolution))
            try:
                manager.submit(job.id, direction=settings.direction,
                               start=frame if settings.start == "this frame" else None, settings=settings.run)
            except RDEVOSError as e:
                return {**app.frame_view(c, job, frame), c.message: f"**Cannot run:** {e}"}
            return {**app.frame_view(c, job, frame), c.job: gr.Dropdown(choices=app.choices(), value=job.id),
                    c.message: ""}

        def on_cancel(view: dict[str, Any] | None) -> dict[Any, Any]:
            job, _ = current(view)
            if job is None:
                return {}
            return {c.status: status_text(manager.cancel(job.id)), c.message: ""}

        def on_tick(view: dict[str, Any] | None, last: list[Any] | None, jobs_seen: list[Any] | None,
                    obj_value: int | None, prompt: PromptState | None) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            choices = app.choices()
            if choices != jobs_seen:
                job_id = (view or {}).get("job")
                out[c.job] = gr.Dropdown(choices=choices, value=job_id if job_id in {j for _, j in choices} else None)
                out[c.jobs_seen] = choices
            job, frame = current(view)  # the view, not the dropdown: never a job the page has left
            if job is None:
                return out
            try:
                info = job.info()
            except RDEVOSError:
                return out
            key = app.seen(job, info)
            if key == last:
                return out
            fresh = last is None or last[0] != job.id
            out[c.tick] = key
            if fresh or last[1] != key[1]:  # an edit here or in another tab, or a run started or ended
                out.update(app.frame_view(c, job, frame, prompt, info))
                out.update(app.object_view(c, job, selected(obj_value), info))
                out.update(app.settings_view(c, manager.job_settings(job)))
                out[c.preview] = app.preview(job, info)
                if not fresh and last[2] != key[2]:
                    out[c.message] = ""  # a message about the run before is stale now
                return out
            out[c.status] = status_text(info)
            if info.last_frame != last[4]:
                out[c.preview] = app.preview(job, info)
            if info.done != last[3]:
                frame = app.clamp(info, frame)
                out[c.timeline] = timeline_html(job, info, frame)
                if job.annotation(frame) is None:
                    out[c.canvas] = app.canvas(job, info, frame, prompt)
            return out

        def on_play(view: dict[str, Any] | None, playing: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None or playing:
                return stop_playing()
            info = job.info()
            frame0 = 0 if frame >= info.num_frames - 1 else frame
            fps = min(max(info.fps, 1.0), _MAX_PLAYBACK_FPS)
            return {c.player: gr.Timer(value=1.0 / fps, active=True),
                    c.playing: {"job": job.id, "frame0": frame0, "t0": time.monotonic(), "fps": info.fps},
                    c.play: gr.Button("⏸ Pause"), **app.frame_view(c, job, frame0)}

        def on_player(view: dict[str, Any] | None, playing: dict[str, Any] | None) -> dict[Any, Any]:
            job, frame = current(view)
            if job is None or not playing or playing.get("job") != job.id:
                return stop_playing()
            info = job.info()
            target = playback_frame(playing["frame0"], playing["t0"], time.monotonic(), playing["fps"],
                                    info.num_frames)
            out: dict[Any, Any] = {}
            if target != frame:
                out = app.frame_view(c, job, target, info=info)
            if target >= info.num_frames - 1:
                out.update(stop_playing())
            return out

        def on_prepare(view: dict[str, Any] | None) -> dict[Any, Any]:
            """Runs beside the page's other events (it takes seconds): it renders only the downloads."""
            job, _ = current(view)
            if job is None:
                return {c.message: no_job}
            try:
                prepare(job)
            except RDEVOSError as e:
                return {c.message: f"**Export failed:** {e}"}
            info = job.info()
            files = current_exports(job, info)
            if files is None:
                return {c.message: "The job changed while the downloads were prepared: prepare them again."}
            partial = " (run in progress: partial results)" if info.active else ""
            return {c.downloads: downloads_html(files, info, partial=bool(partial)),
                    c.message: f"Downloads ready{partial}."}

        # Each event lists only the components it may change. The events that read and render the page's own state
        # (the view, the prompt, what the page has seen) run one at a time, in the order they came: each starts from
        # what the one before left (a timer tick never renders over an edit made meanwhile). Slow ones (an upload's
        # import, preparing downloads) run beside them.
        def on(event: Any, fn: Callable[..., dict[Any, Any]], inputs: list[Any], outputs: list[Any],
               ordered: bool = True, **kw: Any) -> Any:
            if ordered:
                kw.update(concurrency_id="page", concurrency_limit=1)
            return event(handler(fn, outputs), inputs=inputs, outputs=outputs, show_progress="hidden", **kw)

        demo.load(None, js=canvas_js.SETUP)
        on(demo.load, on_load, [c.saved_job], view_outputs, js=canvas_js.SAVED_JOB)
        c.job.change(None, inputs=[c.job], js=canvas_js.REMEMBER_JOB)
        on(c.upload.upload, on_upload, [c.upload], [*view_outputs, c.upload], ordered=False)
        on(c.sample.click, on_sample, [], view_outputs)
        on(c.job.input, on_select, [c.job], view_outputs)
        on(c.job_delete.click, on_job_delete, [c.view, c.confirmed], view_outputs, js=canvas_js.CONFIRM_JOB_DELETE)
        on(c.frame.input, on_frame, [c.frame, c.view, c.prompt], frame_outputs, trigger_mode="always_last")
        cmd = on(c.cmd_go.click, on_cmd, [c.cmd, c.view, c.selected, c.prompt], [*frame_outputs, *object_outputs],
                 js=canvas_js.TAKE_COMMAND, trigger_mode="multiple")
        cmd.then(None, js=canvas_js.COMMAND_DONE)
        on(c.clear.click, on_clear, [c.view], frame_outputs)
        on(c.mask_upload.upload, on_mask_upload, [c.mask_upload, c.view], [*frame_outputs, *object_outputs])
        on(c.undo.click, lambda v: history_command(current(v)[0], True) if current(v)[0] else {c.message: no_job},
           [c.view], frame_outputs)
        on(c.redo.click, lambda v: history_command(current(v)[0], False) if current(v)[0] else {c.message: no_job},
           [c.view], frame_outputs)
        on(c.obj_add.click, on_obj_add, [c.view], [*object_outputs, *frame_outputs])
        obj_outputs = [*object_outputs, *frame_outputs]
        on(c.obj_rename.click, lambda v, o, n: obj_change(v, o, name=n), [c.view, c.selected, c.obj_name], obj_outputs)
        on(c.obj_name.submit, lambda v, o, n: obj_change(v, o, name=n), [c.view, c.selected, c.obj_name], obj_outputs)
        on(c.obj_colour.change, on_colour, [c.view, c.picker, c.obj_colour], obj_outputs, trigger_mode="always_last")
        on(c.obj_hide.input, lambda v, o, h: obj_change(v, o, hidden=h), [c.view, c.selected, c.obj_hide],
           obj_outputs)
        on(c.obj_delete.click, on_obj_delete, [c.view, c.selected, c.confirmed], obj_outputs,
           js=canvas_js.CONFIRM_OBJECT_DELETE)
        settings_inputs = [c.view, c.direction, c.start, c.model, c.device, c.resolution]
        for event in (c.direction.input, c.start.input, c.device.input, c.resolution.input, c.model.blur,
                      c.model.submit):
            on(event, on_settings, settings_inputs, [c.tick, c.message])
        on(c.run.click, on_run, settings_inputs, [*frame_outputs, c.job])
        on(c.cancel.click, on_cancel, [c.view], [c.status, c.message])
        on(timer.tick, on_tick, [c.view, c.tick, c.jobs_seen, c.selected, c.prompt],
           [*view_outputs, c.jobs_seen])
        on(c.play.click, on_play, [c.view, c.playing], [*frame_outputs, *play_outputs])
        on(c.player.tick, on_player, [c.view, c.playing], [*frame_outputs, *play_outputs])
        on(c.prepare.click, on_prepare, [c.view], [c.downloads, c.message], ordered=False)
    return demo


def _same_colour(a: str, b: str) -> bool:
    from rdevos_web.drawing import hex_to_rgb

    try:
        return hex_to_rgb(a) == hex_to_rgb(b)
    except ValueError:
        return False


class _Components:
    """Holder of the components the handlers refer to."""

    upload: Any
    sample: Any
    job: Any
    job_delete: Any
    message: Any
    object_list: Any
    selected: Any
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
    undo: Any
    redo: Any
    clear: Any
    mask_upload: Any
    annotations: Any
    direction: Any
    start: Any
    run: Any
    cancel: Any
    status: Any
    preview: Any
    prepare: Any
    downloads: Any
    cmd: Any
    cmd_go: Any
    saved_job: Any
    confirmed: Any
    view: Any
    tick: Any
    jobs_seen: Any
    prompt: Any
    playing: Any
    player: Any
    picker: Any
