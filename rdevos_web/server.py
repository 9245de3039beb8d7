"""Start the web app: work folder, job manager, Gradio server (safe defaults: localhost, upload size limit)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rdevos_web.runner import JobManager, model_problem
from rdevos_web.store import RunSettings
from rdevos_web.uploads import WorkFolder

logger = logging.getLogger(__name__)

__all__ = ["ServeOptions", "serve", "serve_command", "main", "model_note"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class ServeOptions:
    """Settings of :func:`serve`.

    Attributes:
        work_dir: folder for jobs, uploads and results (created if missing).
        host: address to bind; the default only accepts connections from this machine.
        port: TCP port.
        settings: default model/device/resolution of runs (the page can change them).
        max_upload_mb: largest upload accepted, in MiB.
        max_frames: most frames a job may have.
        open_browser: open the page in the default browser.
        prompt_model: box/click-to-mask model of the editor (``None`` = the embedded default).
    """

    work_dir: Path = Path("rdevos-work")
    host: str = "127.0.0.1"
    port: int = 7860
    settings: RunSettings = RunSettings()
    max_upload_mb: float = 500.0
    max_frames: int = 10_000
    open_browser: bool = False
    prompt_model: str | None = None


def model_note(settings: RunSettings) -> str:
    """A warning for the page when the default model cannot be used (empty when it can)."""
    problem = model_problem(settings.model)
    return f"**Model not available:** {problem}" if problem else ""


def serve(options: ServeOptions) -> None:
    """Run the web app until interrupted (Ctrl+C).

    Gradio's upload cache is put inside the work folder (``WORK/.gradio``) unless ``GRADIO_TEMP_DIR`` is set, so
    that uploads never land elsewhere; this only takes effect if Gradio was not imported before.

    Raises:
        RDEVOSError: the work folder is used by another server.
    """
    root = Path(options.work_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(root / ".gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    import gradio as gr

    from rdevos_web.app import build_app
    from rdevos_web.prompting import PromptService

    work = WorkFolder(root, max_upload_bytes=int(options.max_upload_mb * 2**20), max_frames=options.max_frames)
    work.acquire_lock()
    manager = JobManager(work, options.settings)
    note = model_note(options.settings)
    if note:
        logger.warning("%s", note.replace("**", ""))
    if options.host not in _LOCAL_HOSTS:
        logger.warning("serving on %s: anyone who can reach this address can upload files and run jobs "
                       "(there is no login)", options.host)
    prompts = PromptService(options.prompt_model, device=options.settings.device)
    demo = build_app(work, manager, model_note=note, prompts=prompts)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: works offline
                              font_mono=["ui-monospace", "monospace"])
    logger.info("work folder %s; open http://%s:%d", root, options.host, options.port)
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=options.host, server_port=options.port, share=False, inbrowser=options.open_browser,
            max_file_size=int(options.max_upload_mb * 2**20), allowed_paths=[str(work.jobs_dir)],
            show_error=True, footer_links=[], theme=theme, quiet=False)
    finally:
        manager.shutdown(timeout=10)
        work.release_lock()


def serve_command(*, work_dir: Path, host: str, port: int, model: str | None, device: str, resolution: int | None,
                  max_upload_mb: float, max_frames: int, open_browser: bool, prompt_model: str | None = None) -> int:
    """``rdevos serve`` (the ``rdevos.commands`` plugin entry point): the CLI has checked the values."""
    settings = RunSettings(model=model, device=device, resolution=resolution)
    serve(ServeOptions(work_dir=Path(work_dir), host=host, port=port, settings=settings, max_upload_mb=max_upload_mb,
                       max_frames=max_frames, open_browser=open_browser, prompt_model=prompt_model))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``rdevos-web`` console script: ``rdevos serve`` with the same options."""
    import sys

    from rdevos.cli import main as rdevos_main

    return rdevos_main(["serve", *(sys.argv[1:] if argv is None else argv)])
