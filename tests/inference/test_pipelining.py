"""The pipelined run (engine and key encoder in worker threads, writes in the caller's): same bytes as the
sequential path, order kept, errors where they happened, resume after a kill; the thread policy and the stage
chooser."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdevos import InferenceConfig, RunFolder, VideoSession, run_signature, segment_to_folder
from rdevos.device import ThreadPlan, thread_plan
from rdevos.errors import InputError
from rdevos.hub import save_checkpoint
from rdevos.inference.engine import InferenceEngine
from rdevos.inference.pipelining import PIPELINE_ENV, Ahead, StageChooser, propagate_ahead
from rdevos.model.network import RDEVOS
from tests.conftest import REPO, SAMPLE, sample_frames


# ------------------------------------------------------------------------------------------------ Ahead
def test_ahead_keeps_order_and_runs_deferred_calls_in_the_consumer_after_the_items_before_them() -> None:
    log: list[tuple[str, object, str]] = []

    def start(defer, call) -> Iterator[int]:  # type: ignore[no-untyped-def]
        note = defer(lambda i: log.append(("state", i, threading.current_thread().name)))
        for i in range(20):
            yield i
            note(i)

    with Ahead(start, depth=2) as items:
        for i in items:
            log.append(("item", i, threading.current_thread().name))
    assert log == [(kind, i, threading.main_thread().name) for i in range(20) for kind in ("item", "state")]


def test_ahead_call_runs_in_the_consumer_once_everything_before_it_is_consumed() -> None:
    consumed: list[int] = []

    def start(defer, call):  # type: ignore[no-untyped-def]
        look = call(lambda tag: (tag, threading.current_thread().name, list(consumed)))
        for i in range(5):
            yield i
        yield look("after")

    with Ahead(start, depth=3) as items:
        out = []
        for x in items:
            out.append(x)
            if isinstance(x, int):
                consumed.append(x)
    assert out[:5] == [0, 1, 2, 3, 4]
    assert out[5] == ("after", threading.main_thread().name, [0, 1, 2, 3, 4])


def test_an_error_in_the_worker_is_raised_in_the_consumer_where_it_happened() -> None:
    def start(defer, call) -> Iterator[int]:  # type: ignore[no-untyped-def]
        yield 0
        yield 1
        raise InputError("frame 2 is corrupt")

    got = []
    with pytest.raises(InputError, match="frame 2 is corrupt"), Ahead(start) as items:
        for i in items:
            got.append(i)
    assert got == [0, 1]


def test_an_error_in_a_call_the_consumer_runs_is_raised_in_the_worker() -> None:
    def fail() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/00003.png")

    def start(defer, call) -> Iterator[str]:  # type: ignore[no-untyped-def]
        try:
            call(fail)()
        except OSError as e:
            yield f"worker saw: {e}"

    with Ahead(start) as items:
        assert list(items) == ["worker saw: [Errno 28] No space left on device: '/out/00003.png'"]


def test_closing_stops_the_worker_and_closes_its_generator() -> None:
    closed = threading.Event()

    def start(defer, call) -> Iterator[int]:  # type: ignore[no-untyped-def]
        try:
            i = 0
            while True:  # endless: only close() ends it
                yield i
                i += 1
        finally:
            closed.set()

    items = Ahead(start, depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set() and not items._thread.is_alive()
    with pytest.raises(StopIteration):
        next(items)


# ------------------------------------------------------------------------------------------------ thread policy
def test_thread_plan_never_gives_one_stage_several_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert thread_plan(1) == ThreadPlan(1, 1, 1)
    assert thread_plan(2) == ThreadPlan(2, 2, 1)  # two single-threaded stages: 1.32x on the quiet 2-core Xeon
    assert thread_plan(3) == ThreadPlan(3, 2, 1)
    assert thread_plan(4) == ThreadPlan(4, 2, 2)
    assert thread_plan(16) == ThreadPlan(16, 2, 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 5)
    assert thread_plan() == ThreadPlan(5, 2, 2)  # default: torch's threads (cores, OMP_NUM_THREADS, --threads)
    with pytest.raises(ValueError, match=">= 1"):
        thread_plan(0)


def _feed(chooser: StageChooser, periods: dict[bool, float], frames: int) -> list[bool]:
    """Run ``frames`` frames whose period depends on the mode; the chooser's mode reaches the engine two frames
    later (the queue), as in encode_ahead."""
    modes, in_flight = [], [chooser.ahead, chooser.ahead]
    for _ in range(frames):
        mode = in_flight.pop(0)
        in_flight.append(chooser.ahead)
        chooser.record(periods[mode], mode)
        modes.append(mode)
    return modes


def test_stage_chooser_keeps_the_faster_mode_and_checks_the_other_less_and_less_often() -> None:
    ch = StageChooser(window=3, warmup=2, period=10, max_period=40)
    modes = _feed(ch, {True: 0.2, False: 0.3}, 200)
    assert ch.choice is True and ch.medians == {True: 0.2, False: 0.3}
    assert sum(not m for m in modes) < 0.2 * len(modes)
    assert ch.period == 40  # doubled while the choice stood, up to max_period

    ch = StageChooser(window=3, warmup=2, period=10, max_period=40)
    modes = _feed(ch, {True: 0.5, False: 0.3}, 200)  # a busy machine: the second thread does not pay
    assert ch.choice is False and sum(modes) < 0.2 * len(modes)


def test_stage_chooser_ignores_frames_of_the_other_mode_in_flight() -> None:
    ch = StageChooser(window=2, warmup=0, period=5)
    ch.record(0.1, True)
    ch.record(0.1, True)  # window of 'ahead' full: now times 'inline'
    assert ch.ahead is False
    ch.record(9.0, True)  # still in flight from before the change: not counted
    ch.record(9.0, False)  # the first after the change: not counted
    ch.record(0.4, False)
    ch.record(0.4, False)
    assert ch.choice is True and ch.medians == {True: 0.1, False: 0.4}


# ------------------------------------------------------------------------------------------------ runs
def _session(model: RDEVOS, clip) -> VideoSession:  # type: ignore[no-untyped-def]
    frames, mask = clip
    s = VideoSession(model, frames, InferenceConfig(resolution=None, mem_every=2, precision="fp32"))
    s.add_mask(0, (mask == 3).astype(np.uint8), obj_ids=[3])
    s.add_mask(4, (mask == 7).astype(np.uint8), obj_ids=[7])  # object 7 first given later: fused frames 0..3
    return s


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and not p.name.startswith(".")}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("direction", ["forward", "both"])
def test_pipelined_run_writes_the_same_bytes_as_the_sequential_one(tiny_model: RDEVOS, clip, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   one_torch_thread: None, direction: str) -> None:
    where: dict[str, set[str]] = {"encode": set(), "step": set()}
    for name in where:
        real = getattr(InferenceEngine, name)

        def spy(self, *a, _real=real, _name=name, **k):  # type: ignore[no-untyped-def]
            where[_name].add(threading.current_thread().name)
            return _real(self, *a, **k)

        monkeypatch.setattr(InferenceEngine, name, spy)
    s = _session(tiny_model, clip)
    sig = run_signature(source="clip", annotations=s.annotations(), config=s.config, direction=direction)
    kw = dict(signature=sig, direction=direction, save_probs=True, per_object=True)
    torch.set_num_threads(2)  # sequential: the caller's two torch threads
    monkeypatch.setenv(PIPELINE_ENV, "0")
    seq = segment_to_folder(s, tmp_path / "seq", **kw)
    assert where["step"] == {threading.main_thread().name}
    torch.set_num_threads(4)  # pipelined: two stages of two torch threads each
    monkeypatch.delenv(PIPELINE_ENV)
    where["encode"].clear()
    where["step"].clear()
    seen: list[str] = []
    pipe = segment_to_folder(_session(tiny_model, clip), tmp_path / "pipe", on_frame=lambda p: seen.append(
        threading.current_thread().name), **kw)
    assert where["step"] == {"rdevos-engine"} and "rdevos-encoder" in where["encode"]
    assert set(seen) == {threading.main_thread().name}  # callbacks stay in the caller's thread
    assert torch.get_num_threads() == 4  # the caller's torch threads are left as they were
    assert (pipe.frames, pipe.written, pipe.done) == (seq.frames, seq.written, seq.done)
    a, b = _files(tmp_path / "seq"), _files(tmp_path / "pipe")
    assert len(a) > 8 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_two_threads_run_two_single_threaded_stages_with_the_same_bytes_as_one_thread(tiny_model: RDEVOS, clip, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     one_torch_thread: None) -> None:
    names: set[str] = set()
    real = InferenceEngine.encode

    def spy(self, *a, **k):  # type: ignore[no-untyped-def]
        names.add(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(InferenceEngine, "encode", spy)
    s = _session(tiny_model, clip)
    sig = run_signature(source="clip", annotations=s.annotations(), config=s.config)
    torch.set_num_threads(1)
    monkeypatch.setenv(PIPELINE_ENV, "0")
    segment_to_folder(s, tmp_path / "seq", signature=sig)
    monkeypatch.delenv(PIPELINE_ENV)
    torch.set_num_threads(2)
    names.clear()
    segment_to_folder(_session(tiny_model, clip), tmp_path / "pipe", signature=sig)
    assert names - {"rdevos-engine"}, names  # a second stage encoded (ahead) at least while it was timed
    assert torch.get_num_threads() == 2  # the caller's setting is left as it was
    assert _files(tmp_path / "seq") == _files(tmp_path / "pipe")  # each stage computed with one torch thread


def test_a_write_error_stops_the_run_at_that_frame_and_the_resume_is_identical(tiny_model: RDEVOS, clip,
                                                                                 tmp_path: Path) -> None:
    s = _session(tiny_model, clip)
    sig = run_signature(source="clip", annotations=s.annotations(), config=s.config)
    segment_to_folder(s, tmp_path / "clean", signature=sig)
    from rdevos.io.masks import write_mask

    def full_disk(fr, path: Path) -> None:  # type: ignore[no-untyped-def]
        if fr.index == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_mask(path, fr.labels)

    with pytest.raises(OSError, match="No space left on device") as err:
        segment_to_folder(_session(tiny_model, clip), tmp_path / "out", signature=sig, writer=full_disk)
    assert err.value.filename == str(tmp_path / "out" / "00005.png")
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [f"{i:05d}" for i in range(5)]
    state = RunFolder(tmp_path / "out").load_state(sig)
    assert state is not None and state.frame < 5  # never saved past a frame that was not written
    res = segment_to_folder(_session(tiny_model, clip), tmp_path / "out", signature=sig)
    assert res.resumed is not None and res.complete
    assert _files(tmp_path / "out") == _files(tmp_path / "clean")


def test_a_corrupt_frame_is_reported_by_name_from_the_encoder_thread(tiny_model: RDEVOS, tmp_path: Path,
                                                                      one_torch_thread: None) -> None:
    frames = sample_frames(tmp_path / "frames", 8)
    (frames / "00006.jpg").write_bytes(b"not a jpeg")
    mask = np.asarray(Image.open(SAMPLE / "first_mask.png"))
    s = VideoSession(tiny_model, frames, InferenceConfig(resolution=None, precision="fp32"))
    s.add_mask(0, mask)
    torch.set_num_threads(4)  # two stages: the frames are decoded in the encoder thread
    with pytest.raises(InputError, match="00006.jpg"):
        segment_to_folder(s, tmp_path / "out", signature="x")
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [f"{i:05d}" for i in range(6)]


def test_closing_a_pipelined_propagation_early_stops_its_threads(tiny_model: RDEVOS, clip,
                                                                  one_torch_thread: None) -> None:
    torch.set_num_threads(4)
    before = set(threading.enumerate())
    frames = propagate_ahead(_session(tiny_model, clip), depth=2)
    first = next(frames)
    assert first.index == 0
    frames.close()  # type: ignore[attr-defined]
    time.sleep(0.05)
    assert set(threading.enumerate()) <= before


def test_a_killed_run_resumes_to_byte_identical_pngs(tiny_model: RDEVOS, tmp_path: Path) -> None:
    """``rdevos segment`` killed with SIGKILL mid-run (pipelined, two stages), then run again."""
    frames = tmp_path / "frames"
    frames.mkdir()
    src = sorted((SAMPLE / "frames").glob("*.jpg"))
    for i in range(60):  # the sample played forwards and backwards
        k = i % 48
        shutil.copy(src[k if k < 25 else 48 - k], frames / f"{i:05d}.jpg")
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="4")
    cmd = [sys.executable, "-m", "rdevos.cli", "-q", "segment", str(frames), "--mask", str(SAMPLE / "first_mask.png"),
           "--model", str(ckpt), "--precision", "fp32", "--mem-every", "3", "--resolution", "native", "--no-progress"]
    subprocess.run([*cmd, "-o", str(tmp_path / "clean")], env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "-o", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.png"))) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("*.png")))
    if proc.returncode == 0 or written >= 60:
        pytest.skip("the run finished before it could be killed")
    assert (out / RunFolder.STATE).exists()
    subprocess.run([*cmd, "-o", str(out)], env=env, check=True, capture_output=True)
    assert _files(out) == _files(tmp_path / "clean")
