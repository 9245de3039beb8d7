"""Gradio UI: upload a video, draw objects, run in the background, watch, fix a frame, download.

The page holds no state that matters: jobs, masks and results are in the work folder (:mod:`rdevos_web.jobs`), so a
reload or a new browser shows the same jobs, and a run goes on while no page is open.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.components.image_editor import EditorValue

from rdevos import RDEVOSError, overlay_image, read_mask
from rdevos_web.drawing import apply_strokes, brush_colours, colour_names, strokes_from_layers
from rdevos_web.jobs import ACCEPTED_EXTENSIONS, Job, JobInfo, JobManager, JobStatus, RunSettings, Upload, WorkFolder

logger = logging.getLogger(__name__)

__all__ = ["build_app", "RESOLUTIONS"]

#: Choices of the processing size (short side in pixels, or the frames' own size).
RESOLUTIONS = ["480", "360", "240", "native"]

_HELP = """\
1. Upload a video (mp4, mov, webm, ...), a zip of frames or frame images, or open the sample clip.
2. On any frame, paint each object with its own colour (colour = object id; black = background, to remove mask
   areas) and press *Save mask*, or upload a mask PNG (a label map: 0 = background, 1, 2, ... = objects). The eraser
   removes your strokes. Objects can be added on later frames too.
3. *Run* segments the video in the background: the page can be closed or reloaded meanwhile.
4. Scrub through the results. To fix a frame, paint the correction on it, choose *Start: this frame* and run again.
5. *Prepare downloads* gives the masks (palette PNGs), an overlay video and per-object masks.
"""


def _now(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _status_text(info: JobInfo | None) -> str:
    if info is None:
        return "No job selected."
    parts = [f"**{info.status.value}**"]
    if info.total:
        parts.append(f"{info.done} / {info.total} frames")
    if info.status is JobStatus.RUNNING and info.frames_per_s > 0:
        parts.append(f"{info.frames_per_s:.2f} frames/s")
        if info.eta_s is not None:
            parts.append(f"ETA {info.eta_s:.0f} s")
    if info.message:
        parts.append(info.message)
    return " · ".join(parts)


def _annotation_text(job: Job) -> str:
    ann = job.annotation_summary()
    if not ann:
        return "No mask yet: paint objects on a frame (then *Save mask*) or upload a mask PNG."
    items = [f"frame {i} (object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})" for i, ids in ann.items()]
    return "Masks on " + "; ".join(items)


class _App:
    """What the event handlers share: job lookup and the editor/result/status views of a job."""

    def __init__(self, work: WorkFolder, manager: JobManager) -> None:
        self.work = work
        self.manager = manager

    # ------------------------------------------------------------------ helpers
    def choices(self) -> list[tuple[str, str]]:
        out = []
        for job in self.work.jobs():
            try:
                info = job.info()
            except RDEVOSError:
                continue
            out.append((f"{info.name} · {info.num_frames} frames · {info.status.value} · {_now(info.created)}", job.id))
        return out

    def job(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        try:
            return self.work.job(job_id)
        except RDEVOSError:
            return None

    @staticmethod
    def frame_labels(job: Job, frame: int) -> np.ndarray | None:
        """What the editor shows on a frame: the user's mask, else the result, else nothing."""
        ann = job.annotation(frame)
        return ann if ann is not None else job.result(frame)

    def editor_value(self, job: Job, frame: int) -> EditorValue:
        """The frame with its current mask drawn in, and an empty layer for the user's strokes."""
        labels = self.frame_labels(job, frame)
        image = job.frame(frame)
        return EditorValue(background=image if labels is None else overlay_image(image, labels), layers=[],
                           composite=None)

    @staticmethod
    def result_image(job: Job, frame: int) -> np.ndarray:
        labels = job.result(frame)
        image = job.frame(frame)
        return image if labels is None else overlay_image(image, labels)

    def frame_view(self, c: Any, job: Job, frame: int) -> dict[Any, Any]:
        info = job.info()
        frame = int(min(max(frame, 0), info.num_frames - 1))
        name = job.frame_names[frame]
        return {
            c.editor: gr.ImageEditor(value=self.editor_value(job, frame),
                                     label=f"Draw on frame {frame} ({name}): colour = object, black = background"),
            c.result: gr.Image(value=self.result_image(job, frame), label=f"Result, frame {frame} ({name})"),
            c.view: {"job": job.id, "frame": frame},
            c.annotations: _annotation_text(job),
        }

    def job_view(self, c: Any, job: Job, frame: int = 0) -> dict[Any, Any]:
        info = job.info()
        out = self.frame_view(c, job, frame)
        preview = None
        if info.last_frame is not None and 0 <= info.last_frame < info.num_frames:
            preview = self.result_image(job, info.last_frame)
        out.update({
            c.job: gr.Dropdown(choices=self.choices(), value=job.id),
            c.frame: gr.Slider(minimum=0, maximum=max(info.num_frames - 1, 1), value=min(frame, info.num_frames - 1),
                               step=1, interactive=info.num_frames > 1,
                               label=f"Frame ({info.num_frames} frames, {info.width}x{info.height})"),
            c.status: _status_text(info),
            c.preview: preview,
            c.tick: None,
            c.dl_masks: gr.DownloadButton(visible=False),
            c.dl_overlay: gr.DownloadButton(visible=False),
            c.dl_objects: gr.DownloadButton(visible=False),
        })
        return out

    def save_drawing(self, job: Job | None, editor: dict[str, Any] | None, view: dict[str, Any] | None,
                     *, force: bool = False) -> str | None:
        """Apply the user's strokes to the mask of the frame the editor shows and store it as that frame's mask.

        Returns a message for the user, or ``None`` when nothing was painted (and ``force`` is false).
        """
        if job is None or not view or view.get("job") != job.id or not editor:
            return None
        info = job.info()
        strokes = strokes_from_layers(editor.get("layers") or [], (info.height, info.width))
        if not (strokes >= 0).any():
            return "Nothing painted on this frame: pick a colour and paint with the brush first." if force else None
        frame = int(view["frame"])
        labels = apply_strokes(self.frame_labels(job, frame), strokes)
        if not labels.any():
            removed = job.remove_annotation(frame)
            return f"Frame {frame} has no object left{': its mask was removed' if removed else ''}."
        ids = job.set_annotation(frame, labels)
        return f"Saved the mask of frame {frame} (objects {', '.join(map(str, ids))})."


def build_app(work: WorkFolder, manager: JobManager, *, model_note: str = "") -> gr.Blocks:
    """Build the Gradio app.

    Args:
        work: the work folder (jobs live there).
        manager: runs the jobs.
        model_note: shown under the model field (e.g. that the embedded default model is missing).
    Returns:
        The ``gr.Blocks`` (call ``.queue().launch(...)`` on it, or use :func:`rdevos_web.serve`).
    """
    app = _App(work, manager)
    settings = manager.settings
    legend = ", ".join(f"{i} = {name}" for i, name in colour_names().items() if i) + "; black = background"
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
                c.message = gr.Markdown(elem_id="message")
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
                c.frame = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Frame", elem_id="frame")
                with gr.Row():
                    c.editor = gr.ImageEditor(
                        type="numpy", image_mode="RGBA", format="png", sources=(), transforms=(),
                        brush=gr.Brush(colors=[*brush_colours()], color_mode="fixed"),
                        eraser=gr.Eraser(), layers=gr.LayerOptions(allow_additional_layers=False),
                        label="Draw objects (colour = object)", elem_id="editor", height=420)
                    c.result = gr.Image(label="Result", interactive=False, elem_id="result", height=420,
                                        format="jpeg")
                gr.Markdown(f"Brush colours: {legend}.")
                with gr.Row():
                    c.save = gr.Button("Save mask for this frame", elem_id="save")
                    c.clear = gr.Button("Remove this frame's mask", elem_id="clear")
                    c.mask_upload = gr.UploadButton("Upload a mask PNG for this frame", file_types=[".png"],
                                                    elem_id="mask-upload")
                c.annotations = gr.Markdown(elem_id="annotations")
        with gr.Row():
            c.direction = gr.Radio(["forward", "backward", "both"], value="forward", label="Direction",
                                   elem_id="direction")
            c.start = gr.Radio(["first mask", "this frame"], value="first mask", label="Start", elem_id="start")
            c.run = gr.Button("Run", variant="primary", elem_id="run")
            c.cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
        with gr.Row():
            with gr.Column(scale=2):
                c.status = gr.Markdown("No job selected.", elem_id="status")
                c.prepare = gr.Button("Prepare downloads", elem_id="prepare")
                with gr.Row():
                    c.dl_masks = gr.DownloadButton("Masks (palette PNGs, zip)", visible=False, elem_id="dl-masks")
                    c.dl_overlay = gr.DownloadButton("Overlay video (mp4)", visible=False, elem_id="dl-overlay")
                    c.dl_objects = gr.DownloadButton("Per-object masks (zip)", visible=False, elem_id="dl-objects")
            c.preview = gr.Image(label="Live preview (latest frame)", interactive=False, elem_id="preview",
                                 height=240, format="jpeg")
        c.view = gr.State(None)
        c.tick = gr.State(None)
        timer = gr.Timer(1.0)

        view_outputs = [c.job, c.frame, c.editor, c.result, c.view, c.annotations, c.status, c.preview, c.tick,
                        c.dl_masks, c.dl_overlay, c.dl_objects, c.message]

        def on_load() -> dict[Any, Any]:
            jobs = work.jobs()
            if not jobs:
                return {c.job: gr.Dropdown(choices=[], value=None), c.message: "No job yet: upload a video."}
            n = len(jobs)
            return {**app.job_view(c, jobs[0]),
                    c.message: f"{n} job{'s' if n > 1 else ''} in the work folder; showing the newest."}

        def on_upload(files: list[str] | None) -> dict[Any, Any]:
            if not files:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            try:
                job = work.create_job([Upload(Path(f), Path(f).name) for f in files])
            except RDEVOSError as e:
                return {c.message: f"**Upload refused:** {e}", c.upload: None}
            info = job.info()
            return {**app.job_view(c, job), c.upload: None,
                    c.message: f"Opened **{info.name}**: {info.num_frames} frames of {info.width}x{info.height}. "
                               "Now paint or upload a mask."}

        def on_sample() -> dict[Any, Any]:
            try:
                job = work.create_sample_job()
            except RDEVOSError as e:
                return {c.message: f"**Error:** {e}"}
            return {**app.job_view(c, job), c.message: "Opened the sample clip with its first-frame mask; press Run."}

        def on_select(job_id: str | None, editor: dict[str, Any] | None, view: dict[str, Any] | None
                      ) -> dict[Any, Any]:
            note = app.save_drawing(app.job((view or {}).get("job")), editor, view)
            job = app.job(job_id)
            if job is None:
                return {c.message: "That job no longer exists."}
            return {**app.job_view(c, job), c.message: note or ""}

        def on_frame(job_id: str | None, frame: float, editor: dict[str, Any] | None,
                     view: dict[str, Any] | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            try:
                note = app.save_drawing(job, editor, view)
            except RDEVOSError as e:
                note = f"**Not saved:** {e}"
            return {**app.frame_view(c, job, int(frame)), c.message: note or ""}

        def on_save(job_id: str | None, editor: dict[str, Any] | None, view: dict[str, Any] | None
                    ) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return {c.message: "Upload a video first."}
            try:
                note = app.save_drawing(job, editor, view, force=True)
            except RDEVOSError as e:
                return {c.message: f"**Not saved:** {e}"}
            return {**app.frame_view(c, job, int((view or {}).get("frame", 0))), c.message: note or ""}

        def on_clear(job_id: str | None, view: dict[str, Any] | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None or not view:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            frame = int(view["frame"])
            removed = job.remove_annotation(frame)
            return {**app.frame_view(c, job, frame),
                    c.message: f"Removed the mask of frame {frame}." if removed else f"Frame {frame} has no mask."}

        def on_mask_upload(job_id: str | None, file: str | None, view: dict[str, Any] | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None or not view or not file:
                return {c.message: "Upload a video first."}
            frame = int(view["frame"])
            try:
                ids = job.set_annotation(frame, read_mask(file).labels)
            except RDEVOSError as e:
                return {c.message: f"**Mask refused:** {e}"}
            return {**app.frame_view(c, job, frame),
                    c.message: f"Mask of frame {frame} set (objects {', '.join(map(str, ids))})."}

        def on_run(job_id: str | None, editor: dict[str, Any] | None, view: dict[str, Any] | None,
                   direction: str, start: str, model: str, device: str, resolution: str) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return {c.message: "Upload a video first."}
            try:
                note = app.save_drawing(job, editor, view)
                run_settings = RunSettings(model=(model or "").strip() or None, device=device or "auto",
                                           resolution=None if resolution == "native" else int(resolution))
                frame = int((view or {}).get("frame", 0))
                info = manager.submit(job.id, direction=direction, start=frame if start == "this frame" else None,
                                      settings=run_settings)
            except RDEVOSError as e:
                return {c.message: f"**Cannot run:** {e}", c.annotations: _annotation_text(job)}
            out = app.frame_view(c, job, frame) if note else {}
            return {**out, c.status: _status_text(info), c.message: note or "", c.annotations: _annotation_text(job),
                    c.tick: None}

        def on_cancel(job_id: str | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            return {c.status: _status_text(manager.cancel(job.id))}

        def on_tick(job_id: str | None, view: dict[str, Any] | None, last: list[Any] | None) -> dict[Any, Any]:
            job = app.job(job_id)
            if job is None:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            try:
                info = job.info()
            except RDEVOSError:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            key = [info.status.value, info.done, info.last_frame, info.message]
            if key == last:
                return {c.tick: gr.skip()}  # nothing changes (an empty dict reads as no outputs)
            out: dict[Any, Any] = {c.status: _status_text(info), c.tick: key}
            if info.last_frame is not None and (last is None or info.last_frame != last[2]):
                out[c.preview] = app.result_image(job, info.last_frame)
            if view and view.get("job") == job.id:
                out[c.result] = app.result_image(job, int(view["frame"]))
            if last is not None and last[0] != key[0]:
                out[c.job] = gr.Dropdown(choices=app.choices(), value=job.id)
            return out

        def on_prepare(job_id: str | None) -> dict[Any, Any]:
            job = app.job(job_id)
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
                    c.message: f"Downloads ready{partial}; they are also in {job.exports_dir}."}

        # Each event lists only the components it may change: an output shows a loading state while its event
        # runs, and the editor would redraw its toolbar on every timer tick.
        frame_outputs = [c.editor, c.result, c.view, c.annotations, c.message, c.tick]
        demo.load(on_load, outputs=view_outputs)
        c.upload.upload(on_upload, inputs=[c.upload], outputs=[*view_outputs, c.upload])
        c.sample.click(on_sample, outputs=view_outputs)
        c.job.input(on_select, inputs=[c.job, c.editor, c.view], outputs=view_outputs)
        c.frame.input(on_frame, inputs=[c.job, c.frame, c.editor, c.view], outputs=frame_outputs,
                      trigger_mode="always_last", show_progress="hidden")
        c.save.click(on_save, inputs=[c.job, c.editor, c.view], outputs=frame_outputs)
        c.clear.click(on_clear, inputs=[c.job, c.view], outputs=frame_outputs)
        c.mask_upload.upload(on_mask_upload, inputs=[c.job, c.mask_upload, c.view], outputs=frame_outputs)
        c.run.click(on_run, inputs=[c.job, c.editor, c.view, c.direction, c.start, c.model, c.device, c.resolution],
                    outputs=[*frame_outputs, c.status])
        c.cancel.click(on_cancel, inputs=[c.job], outputs=[c.status, c.tick])
        timer.tick(on_tick, inputs=[c.job, c.view, c.tick], outputs=[c.status, c.preview, c.result, c.job, c.tick],
                   show_progress="hidden")
        c.prepare.click(on_prepare, inputs=[c.job], outputs=[c.dl_masks, c.dl_overlay, c.dl_objects, c.message,
                                                             c.tick])
    return demo


class _Components:
    """Holder of the components the handlers refer to."""

    upload: Any
    sample: Any
    job: Any
    message: Any
    model: Any
    device: Any
    resolution: Any
    frame: Any
    editor: Any
    result: Any
    save: Any
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
    view: Any
    tick: Any
