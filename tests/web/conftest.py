"""Fixtures of the web-app tests: a small real clip, a tiny checkpoint, a served app and a headless Chromium.

The browser tests need ``gradio`` (the ``web`` extra), ``playwright`` and a Chromium binary: ``$RDEVOS_CHROMIUM``,
``chromium``/``chromium-browser``/``google-chrome`` on PATH, or Playwright's own download. Without them they are
skipped with the reason; with ``RDEVOS_WEB_TESTS=require`` (set by ``.ci/run``) they fail instead, so CI cannot go
green without running them. Screenshots go to ``$RDEVOS_SCREENSHOTS`` or a pytest temporary folder (printed at the
end of the run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest
import torch
from PIL import Image

from rdevos.hub import save_checkpoint
from rdevos.io.masks import write_mask
from rdevos.model.network import RDEVOS
from tests.conftest import REPO, SAMPLE, TINY, sane_init_

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CLIP_SIZE = (160, 90)  # (W, H): small, so a run takes a second on one CPU core
CLIP_FRAMES = 10
#: Seconds each result frame is held back in the served app, so that progress can be watched.
FRAME_DELAY = 0.1
_SHOTS: list[Path] = []


def _require() -> bool:
    return os.environ.get("RDEVOS_WEB_TESTS", "") == "require"


def _missing(reason: str) -> None:
    if _require():
        pytest.fail(f"{reason} (RDEVOS_WEB_TESTS=require)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """A Chromium binary: $RDEVOS_CHROMIUM, a system one, or None (Playwright's own, if installed)."""
    env = os.environ.get("RDEVOS_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def web_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 10-frame 160x90 mp4 of the sample clip, its first-frame mask (object 1), and a tiny checkpoint."""
    d = tmp_path_factory.mktemp("webdata")
    frames = [np.asarray(Image.open(p).convert("RGB").resize(CLIP_SIZE, Image.Resampling.BILINEAR))
              for p in sorted((SAMPLE / "frames").glob("*.jpg"))[:CLIP_FRAMES]]
    video = d / "clip.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height = CLIP_SIZE
        s.pix_fmt = "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    mask = np.asarray(Image.open(SAMPLE / "first_mask.png").resize(CLIP_SIZE, Image.Resampling.NEAREST))
    write_mask(d / "mask.png", mask)
    frames_zip = d / "frames.zip"
    with zipfile.ZipFile(frames_zip, "w") as zf:
        for i, f in enumerate(frames):
            p = d / f"f{i}.png"
            Image.fromarray(f).save(p)
            zf.write(p, f"clip/{i}.png")  # natural order: 0, 1, ..., 9 (not 0, 1, 10)
    torch.manual_seed(0)
    net = RDEVOS(TINY)
    sane_init_(net, seed=0)
    ckpt = save_checkpoint(net.eval(), d / "tiny.pt")
    return {"video": video, "mask": d / "mask.png", "zip": frames_zip, "ckpt": ckpt, "dir": d}


# ---------------------------------------------------------------------------------------------------- server
@dataclass
class Server:
    url: str
    work: Path
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(work: Path, ckpt: Path, *, max_upload_mb: float = 0.5, log: Path, port: int | None = None
                 ) -> Server:
    """``rdevos serve`` in a subprocess (through _slow_server.py, which adds FRAME_DELAY), ready to use."""
    port = port or _free_port()
    cmd = [sys.executable, str(Path(__file__).with_name("_slow_server.py")), str(FRAME_DELAY), "serve",
           "--work-dir", str(work), "--port", str(port), "--model", str(ckpt), "--device", "cpu",
           "--resolution", "native", "--max-upload-mb", str(max_upload_mb)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(work.parent))
    url = f"http://127.0.0.1:{port}/"
    t_end = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > t_end:
            proc.kill()
            raise RuntimeError(f"the server did not answer within 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return Server(url, work, proc, log)


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()  # results are on disk already: no need for Gradio's slow clean shutdown
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)


@pytest.fixture(scope="session")
def server(web_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if importlib.util.find_spec("gradio") is None:
        _missing("gradio is not installed (pip install 'rdevos[web]')")
    root = tmp_path_factory.mktemp("webserver")
    srv = start_server(root / "work", web_data["ckpt"], log=root / "server.log")
    yield srv
    stop_server(srv)
    log = srv.log.read_text(errors="replace")
    at = log.find("Traceback")  # an event that failed: the page showed Gradio's red "Error" instead of a message
    assert at < 0, f"the server logged an error during the browser tests:\n{log[max(at - 500, 0):at + 3000]}"


# ---------------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright is not installed (pip install playwright)")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    # No GPU here: --disable-gpu keeps drawing in the renderer (a separate GPU process made every interaction slow).
    args = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-dev-shm-usage"]
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=args, headless=True)
        except PlaywrightError as e:
            _missing(f"no usable Chromium (install the 'chromium' system package or set RDEVOS_CHROMIUM): "
                     f"{str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="session")
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """One server and page for the browser tests (starting them takes seconds); each test opens its own job."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1250}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server.url)
    from playwright.sync_api import expect

    expect(pg.locator("#message")).to_contain_text("job", timeout=30_000)  # the page has loaded its job list
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("RDEVOS_SCREENSHOTS")
    d = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def shot(shots_dir: Path, request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """``shot(page, "name")`` saves a screenshot of the page as ``<test>-<name>.png``."""

    def take(pg: Page, name: str) -> Path:
        path = shots_dir / f"{request.node.name}-{name}.png"
        from playwright.sync_api import Error as PlaywrightError

        loading = pg.locator("#canvas").get_by_text("processing")
        with contextlib.suppress(PlaywrightError):  # let the canvas finish loading its frame (best effort)
            loading.wait_for(state="hidden", timeout=10_000)
        pg.screenshot(path=str(path))  # the viewport holds the whole page
        _SHOTS.append(path)
        return path

    return take


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SHOTS:
        terminalreporter.write_line(
            f"web app screenshots ({len(_SHOTS)}): {_SHOTS[0].parent}")
