"""Where the wall time of ``rdevos segment`` goes, and end-to-end frames/s of variants side by side.

The clip: ``benchmarks/make_clip.py`` (the bundled sample at 854x480, looped to 100 frames, 2 objects).

``breakdown``: one in-process run of the command (``rdevos.cli.main``) with a timer around every stage: model load,
frame decode (JPEG -> RGB array), preprocessing (uint8 -> normalised float, resize, pad: inside the engine's step),
the engine (the rest of the step), labels (argmax -> uint8 array), PNG encode + write, resume-state saves and run
records, and the overlay pass (decode again, read the PNG back, blend, x264). Wall and process CPU time per stage
(CPU time counts all threads and is not inflated by other processes on a shared machine). Nested stages are not
counted twice: a stage's time excludes the stages timed inside it. Where work runs in worker threads (the pipelined
path) the per-stage times overlap the engine, so compare the total and the engine with the sequential run.

``compare``: ``rdevos segment`` as fresh processes, variants interleaved round by round (so machine load hits all
alike): a source tree each (``--baseline-src`` e.g. a ``git archive`` of main, and this checkout), 1 and 2 torch
threads. Wall time of the whole command (model load included) and its CPU time; medians and ratios.

    python benchmarks/bench_segment.py breakdown --threads 1 --overlay
    python benchmarks/bench_segment.py compare --baseline-src /tmp/main-src --threads 1,2 --repeat 3 -o out.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_clip import make_clip  # noqa: E402

DEFAULT_CLIP = Path(os.environ.get("RDEVOS_BENCH_CLIP", Path(tempfile.gettempdir()) / "rdevos-bench-clip100"))


# ------------------------------------------------------------------------------------------------ breakdown
class StageTimer:
    """Wall and process-CPU seconds per stage; a stage nested in another is subtracted from the outer one.

    Only the main thread's stages nest; a stage timed in another thread is counted on its own (``thread:`` prefix).
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # [wall, cpu] of inner stages per open outer stage
        self.phase = "segment"
        self._main = threading.main_thread()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        main = threading.current_thread() is self._main
        key = name if main else f"thread: {name}"
        if name in ("decode", "PNG read back") and self.phase == "overlay":
            key = f"overlay: {name}"
        w0, c0 = time.perf_counter(), time.process_time() if main else time.thread_time()
        if main:
            self._stack.append([0.0, 0.0])
        try:
            yield
        finally:
            w = time.perf_counter() - w0
            c = (time.process_time() if main else time.thread_time()) - c0
            if main:
                inner_w, inner_c = self._stack.pop()
                if self._stack:
                    self._stack[-1][0] += w
                    self._stack[-1][1] += c
                w, c = w - inner_w, c - inner_c
            self.wall[key] += w
            self.cpu[key] += c
            self.calls[key] += 1

    def wrap(self, owner: object, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            with self.stage(name):
                return fn(*a, **kw)

        setattr(owner, attr, timed)


def instrument(timer: StageTimer) -> None:
    """Put timers around every stage of ``rdevos segment`` (module attributes, looked up at call time)."""
    import rdevos.hub
    import rdevos.inference.engine as engine
    import rdevos.io.frames as frames
    import rdevos.io.masks as masks
    import rdevos.io.overlay as overlay
    import rdevos.inference.runs as runs

    timer.wrap(rdevos.hub, "load_model", "model load")
    timer.wrap(frames.FolderSource, "_read", "decode")
    timer.wrap(frames.VideoSource, "_to_array", "decode")
    timer.wrap(engine.InferenceEngine, "step", "engine")
    if hasattr(engine.InferenceEngine, "encode"):  # preprocessing + key encoder, a frame ahead with 2 threads
        timer.wrap(engine.InferenceEngine, "encode", "key encoder")
    for fn in ("to_image_tensor", "normalize", "resize_image", "pad_divide_by"):
        timer.wrap(engine, fn, "preprocess (to float, normalise, resize, pad)")
    timer.wrap(engine.InferenceEngine, "probs_to_labels", "labels (argmax)")
    timer.wrap(masks, "write_mask", "PNG encode + write")
    timer.wrap(masks, "read_mask", "PNG read back")
    timer.wrap(runs.RunFolder, "save_state", "resume-state saves")
    timer.wrap(runs.RunFolder, "write_meta", "run record writes")
    timer.wrap(overlay.OverlayWriter, "write", "overlay blend + x264 encode")
    timer.wrap(overlay.OverlayWriter, "close", "overlay blend + x264 encode")

    import rdevos.cli.segment as seg

    previews = seg._write_previews

    def phased(*a: Any, **kw: Any) -> Any:
        timer.phase = "overlay"
        try:
            return previews(*a, **kw)
        finally:
            timer.phase = "segment"

    seg._write_previews = phased


def breakdown(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rdevos.cli import main as cli_main

    frames, mask = make_clip(args.clip, args.frames)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = StageTimer()
    instrument(timer)
    out = Path(tempfile.mkdtemp(prefix="rdevos-bench-out-"))
    argv = ["segment", str(frames), "--mask", str(mask), "-o", str(out / "masks"), "--no-progress", "--overwrite",
            *args.extra]
    if args.overlay:
        argv += ["--overlay", str(out / "overlay.mp4")]
    w0, c0 = time.perf_counter(), time.process_time()
    rc = cli_main(argv)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    shutil.rmtree(out, ignore_errors=True)
    if rc:
        raise SystemExit(f"rdevos segment failed (exit {rc})")
    rows = [{"stage": k, "wall_s": timer.wall[k], "cpu_s": timer.cpu[k], "calls": timer.calls[k]}
            for k in sorted(timer.wall, key=lambda k: -timer.wall[k])]
    main_wall = sum(r["wall_s"] for r in rows if not r["stage"].startswith("thread: "))
    rows.append({"stage": "other (imports, CLI, session, checks)", "wall_s": wall - main_wall,
                 "cpu_s": None, "calls": None})
    n = args.frames
    print(f"rdevos segment, {n} frames 854x480, 2 objects, torch threads {torch.get_num_threads()}, "
          f"{' '.join(args.extra) or 'default settings'}{', --overlay' if args.overlay else ''}")
    print(f"{'stage':<48}{'wall s':>9}{'ms/frame':>10}{'share':>8}{'CPU s':>9}")
    for r in rows:
        cpu_s = "" if r["cpu_s"] is None else f"{r['cpu_s']:9.2f}"
        print(f"{r['stage']:<48}{r['wall_s']:9.2f}{1000 * r['wall_s'] / n:10.1f}{r['wall_s'] / wall:8.1%}{cpu_s}")
    print(f"{'total':<48}{wall:9.2f}{1000 * wall / n:10.1f}{1:8.0%}{cpu:9.2f}   -> {n / wall:.2f} frames/s end to "
          f"end (CPU {cpu / n:.3f} s/frame)")
    return {"frames": n, "threads": torch.get_num_threads(), "extra": args.extra, "overlay": args.overlay,
            "wall_s": wall, "cpu_s": cpu, "rows": rows, "machine": machine()}


# ------------------------------------------------------------------------------------------------ compare
def machine() -> dict[str, Any]:
    from rdevos.eval.bench import _cpu_flags, _cpu_name

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": _cpu_name(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(), "loadavg": load,
            "python": platform.python_version()}


def run_segment(src: Path, frames: Path, mask: Path, out: Path, threads: int, extra: list[str],
                env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``rdevos segment`` in a fresh process: wall and CPU time (children's rusage) and its printed line."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads), **(env_extra or {}))
    cmd = [sys.executable, "-m", "rdevos.cli", "segment", str(frames), "--mask", str(mask), "-o", str(out),
           "--no-progress", "--overwrite", *extra]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # cwd=src: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "line": proc.stdout.strip().splitlines()[0]}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    frames, mask = make_clip(args.clip, args.frames)
    n = args.frames
    srcs = {"new": Path(args.src).resolve()}
    if args.baseline_src:
        srcs = {"baseline": Path(args.baseline_src).resolve(), **srcs}
    variants = [(name, th) for th in args.threads for name in srcs]  # each thread count: baseline, new
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    outs = Path(tempfile.mkdtemp(prefix="rdevos-bench-cmp-"))
    try:
        for rnd in range(args.repeat):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for name, th in order:
                key = f"{name} {th}t"
                res = run_segment(srcs[name], frames, mask, outs / key.replace(" ", "_"), th, args.extra)
                runs[key].append(res)
                print(f"round {rnd + 1} {key:<14} wall {res['wall_s']:7.1f} s ({n / res['wall_s']:.2f} frames/s), "
                      f"CPU {res['cpu_s']:7.1f} s | {res['line']}", flush=True)
        if args.check_identical and len(variants) > 1:
            ref = None
            for name, th in variants:
                d = outs / f"{name}_{th}t"
                got = {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))}
                ref = got if ref is None else ref
                print(f"{name} {th}t: {len(got)} PNGs, byte-identical to the first variant: {got == ref}")
    finally:
        shutil.rmtree(outs, ignore_errors=True)
    summary = {}
    for key, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        summary[key] = {"wall_s_median": wall, "fps": n / wall, "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                        "runs": rs}
    print(f"\nmedians over {args.repeat} rounds, {n} frames 854x480, 2 objects, model load included:")
    for key, s in summary.items():
        print(f"  {key:<14} {s['wall_s_median']:7.1f} s wall = {s['fps']:.2f} frames/s, CPU {s['cpu_s_median']:.1f} s")
    if "baseline 1t" in summary or "baseline 2t" in summary:
        for th in args.threads:
            b, m = summary.get(f"baseline {th}t"), summary.get(f"new {th}t")
            if b and m:
                ratios = [x["wall_s"] / y["wall_s"] for x, y in zip(b["runs"], m["runs"])]
                print(f"  {th} thread(s): new is {statistics.median(ratios):.2f}x faster than baseline (per round "
                      f"{', '.join(f'{r:.2f}' for r in ratios)})")
    return {"frames": n, "extra": args.extra, "summary": summary, "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("breakdown", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="where the benchmark clip is (made if missing)")
        p.add_argument("--frames", type=int, default=100)
        p.add_argument("-o", "--output", type=Path, help="write the results as JSON")
        p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                       help="more rdevos segment options (last on the line)")
    b = sub.choices["breakdown"]
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: the command's default)")
    b.add_argument("--overlay", action="store_true", help="also write an overlay mp4 (--overlay)")
    c = sub.choices["compare"]
    c.add_argument("--src", default=str(HERE.parent), help="source tree of the new code (default: this checkout)")
    c.add_argument("--baseline-src", help="source tree of the baseline (e.g. `git archive main | tar -x -C DIR`)")
    c.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    c.add_argument("--repeat", type=int, default=3)
    c.add_argument("--check-identical", action="store_true", help="compare the variants' PNGs byte for byte")
    args = ap.parse_args()
    result: dict[str, Any] = breakdown(args) if args.cmd == "breakdown" else compare(args)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
