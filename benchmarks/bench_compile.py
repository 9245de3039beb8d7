"""Does ``torch.compile`` pay off for CPU inference on top of rdevos's hand-made fast path?

For each (model, precision, mode) a fresh child process builds two engines on the same network and the same clip
(``rdevos.eval.bench.bench_clip``: 853x480 frames, 2 objects; ``InferenceConfig(top_k=20, mem_every=4,
precision=..., resolution=None)``):

* ``baseline``: ``InferenceEngine`` as it is (``eng.net`` = the fast inference copy of ``rdevos.model.fastpath``);
* ``compiled``: the same engine with some network methods replaced by ``torch.compile``-d versions (see MODES).

The two engines process the same video and alternate frame by frame (baseline frame i, compiled frame i, ...), so
machine load hits both alike. Per engine: the wall time of the warm-up frames (for the compiled engine that
includes every compilation: frame 0 = key encoder + value encoder, frame 1 = decoder; ``compile_s`` is that wall
time minus the baseline's), then the CPU time (``time.process_time``) of each of ``--frames`` timed frames
(memory frames included, every ``mem_every``-th). Reported: steady CPU s/frame (mean of the timed frames), the
ratio compiled/baseline (< 1 = compiled is faster; "med r" = median of the per-frame ratios, which a
recompilation inside the timed frames does not move), label agreement (share of equal ``probs_to_labels`` pixels) and
max abs probability difference against the baseline over all frames, Dynamo recompilations
(``torch._dynamo.utils.counters``) and graph breaks, and the first line of the error when a mode fails.

Each child gets a fresh, empty inductor cache directory, so compile times are cold (no FX-graph or C++ cache hits).
Compile time is wall time: gcc runs in subprocesses that ``process_time`` does not see.

MODES (``--modes``, comma-separated):
    compile           fast copy; encode_key, segment, encode_value -> torch.compile(dynamic=False)
    compile-fake      "compile", after this script registers a Meta kernel for ``mkldnn._convolution_pointwise.binary``
                      (torch 2.13 has one only for the ``.default`` overload; without it Dynamo breaks the graph at
                      every residual convolution): whole graphs of the fused fast path, which inductor lowers as
                      extern oneDNN calls plus generated code for everything between them
    compile-autotune  same as "compile", mode="max-autotune-no-cudagraphs"
    compile-freeze    same, inductor freezing on (options={"freezing": True})
    compile-read      "compile" plus the memory read (query_affinity, topk_readout) compiled, for this engine only
    unfused-compile   fast copy built with ``inference_network(..., fused=False)`` (folded BN, channels_last, bf16
                      weights, but ``F.conv2d`` + eager add/ReLU instead of oneDNN fused ops), compiled: inductor
                      sees whole graphs (``mkldnn._convolution_pointwise.binary`` has no fake-tensor kernel in
                      torch 2.13, so with the fused copy Dynamo breaks the graph at every residual convolution)
    unfused-freeze    the same with freezing (inductor's oneDNN conv+pointwise fusion and weight prepacking)
    plain-freeze      the *plain* network (``eng.model``: BatchNorm unfolded, fp32 weights) with its encode_key,
                      segment, encode_value compiled with freezing (inductor's own BN folding, weight prepacking and
                      oneDNN fusion); bf16 runs them under ``torch.autocast("cpu", torch.bfloat16)``; compress_memory
                      runs eager (under autocast in bf16)
    plain-compile     the plain network compiled without freezing (reference for plain-freeze)

Run pinned to one core, e.g.::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_compile.py --model rdevos-lite2 \\
        --precision bf16,fp32 --modes compile,compile-fake,plain-freeze --frames 10 -o /tmp/compile.json

``--model official`` is the official architecture with random weights (``rdevos.eval.bench.random_model(0)``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("bench_compile")

MODES = ("compile", "compile-fake", "compile-autotune", "compile-freeze", "compile-read", "unfused-compile", "unfused-freeze",
         "plain-freeze", "plain-compile")
COMPILED_METHODS = ("encode_key", "segment", "encode_value")


# ------------------------------------------------------------------------------------------------ child
def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _PlainNet:
    """``eng.net`` stand-in: the plain network's methods (compiled or not), under bf16 autocast when asked."""

    def __init__(self, model, methods: dict, autocast_dtype) -> None:
        self.model = model
        self.config = model.config
        self._autocast_dtype = autocast_dtype
        for name, fn in methods.items():
            setattr(self, name, fn)

    def compress_memory(self, key, value):
        import torch
        if self._autocast_dtype is None:
            return self.model.compress_memory(key, value)
        with torch.autocast("cpu", dtype=self._autocast_dtype):
            return self.model.compress_memory(key, value)


def _plain_methods(model, autocast_dtype) -> dict:
    """One function per method (distinct code objects: Dynamo caches per code object, so a shared wrapper would
    show up as recompilations of one function)."""
    import contextlib

    import torch

    def ctx():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=autocast_dtype)

    def plain_encode_key(image):
        with ctx():
            return model.encode_key(image)

    def plain_segment(readout, f16_thin, f8, f4):
        with ctx():
            return model.segment(readout, f16_thin, f8, f4)

    def plain_encode_value(image, f16, masks):
        with ctx():
            return model.encode_value(image, f16, masks)

    return {"encode_key": plain_encode_key, "segment": plain_segment, "encode_value": plain_encode_value}


def _register_binary_conv_meta() -> None:
    """Meta (shape) kernel for ``mkldnn._convolution_pointwise.binary``, mirroring torch's ``.default`` one."""
    import torch
    from torch._meta_registrations import calc_conv_nd_return_shape

    def meta(x, other, weight, bias, padding, stride, dilation, groups, binary_attr, alpha, unary_attr,
             unary_scalars, unary_algorithm):
        shape = calc_conv_nd_return_shape(x, weight, stride, padding, dilation, False, groups, [])
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        return x.new_empty(shape).to(memory_format=fmt)

    global _META_LIB
    _META_LIB = torch.library.Library("mkldnn", "IMPL", "Meta")  # kept alive: the registration lives with it
    _META_LIB.impl("_convolution_pointwise.binary", meta)


_META_LIB = None


def _make_compiled_engine(mode: str, model, cfg, state: dict):
    """An engine for ``mode``; its network methods are replaced by lazily compiled ones (compiled on first call)."""
    import torch

    import rdevos.inference.engine as engine_mod
    from rdevos.inference.engine import InferenceEngine
    from rdevos.model.fastpath import inference_network

    eng = InferenceEngine(model, cfg, device="cpu")
    if mode == "compile-fake":
        _register_binary_conv_meta()
    kw: dict = {"dynamic": False}
    if mode == "compile-autotune":
        kw["mode"] = "max-autotune-no-cudagraphs"
    if mode in ("compile-freeze", "unfused-freeze", "plain-freeze"):
        kw["options"] = {"freezing": True}
    if mode.startswith(("compile", "unfused")):
        # A private copy: the engine's net is cached on the model and shared with the baseline engine.
        net = inference_network(eng.model, dtype=eng._dtype, channels_last=True, fp32_stride=cfg.fp32_stride,
                                fused=not mode.startswith("unfused"))
        for name in COMPILED_METHODS:
            setattr(net, name, torch.compile(getattr(net, name), **kw))
        eng.net = net
    else:  # plain network
        ac = torch.bfloat16 if eng._dtype is torch.bfloat16 else None
        methods = {name: torch.compile(fn, **kw) for name, fn in _plain_methods(eng.model, ac).items()}
        eng.net = _PlainNet(eng.model, methods, ac)
    if mode == "compile-read":
        # The engine module's globals are shared by both engines: dispatch on which engine is stepping.
        orig = {n: getattr(engine_mod, n) for n in ("query_affinity", "topk_readout")}
        comp = {n: torch.compile(f, dynamic=False) for n, f in orig.items()}

        def dispatch(n):
            def fn(*args, **kwargs):
                return (comp if state["compiled_read"] else orig)[n](*args, **kwargs)
            return fn

        for n in orig:
            setattr(engine_mod, n, dispatch(n))
    return eng


def _child(spec: dict) -> dict:
    import numpy as np
    import torch
    import torch._dynamo.utils as dyn_utils

    torch.set_num_threads(spec["threads"])
    torch._inductor.config.compile_threads = 1  # one core: no worker pool

    from rdevos import InferenceConfig, load_model
    from rdevos.eval.bench import bench_clip, frame_order, random_model
    from rdevos.inference.engine import InferenceEngine

    mode, n_frames, warm = spec["mode"], spec["frames"], spec["warmup"]
    model = random_model(0) if spec["model"] == "official" else load_model(spec["model"], progress=False)
    frames, mask = bench_clip(spec["resolution"], spec["objects"])
    cfg = InferenceConfig(top_k=20, mem_every=4, precision=spec["precision"], resolution=None,
                          **({} if spec.get("fp32_stride") is None else {"fp32_stride": spec["fp32_stride"]}))
    order = frame_order(len(frames), warm + n_frames)
    state = {"compiled_read": False}
    base = InferenceEngine(model, cfg, device="cpu")
    out: dict = {"model": spec["model"], "precision": spec["precision"], "mode": mode, "fp32_stride": cfg.fp32_stride,
                 "torch": torch.__version__, "threads": torch.get_num_threads()}
    comp = None
    try:
        comp = _make_compiled_engine(mode, model, cfg, state)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["error"] = "build: " + _first_line(exc)
    engines = {"baseline": base} if comp is None else {"baseline": base, "compiled": comp}
    wall = {k: [] for k in engines}
    cpu = {k: [] for k in engines}
    probs_diff: list[float] = []
    agree_num = agree_den = 0
    per_frame_agree: list[float] = []
    with torch.inference_mode():
        for i, fi in enumerate(order):
            labels = {}
            probs = {}
            for name, eng in list(engines.items()):
                state["compiled_read"] = name == "compiled"
                m = mask if i == 0 else None
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    p = eng.step(frames[fi], m, is_last=False)
                    lab = eng.probs_to_labels(p)
                except Exception as exc:  # noqa: BLE001
                    if name == "baseline":
                        raise
                    out["error"] = f"frame {i}: " + _first_line(exc)
                    logger.warning("%s: %s", mode, out["error"])
                    del engines[name]
                    continue
                finally:
                    state["compiled_read"] = False
                c1, w1 = time.process_time(), time.perf_counter()
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
                probs[name], labels[name] = p, lab
            if "compiled" in probs:
                probs_diff.append(float((probs["compiled"] - probs["baseline"]).abs().max()))
                eq = (labels["compiled"] == labels["baseline"])
                agree_num += int(eq.sum())
                agree_den += eq.numel()
                per_frame_agree.append(float(eq.float().mean()))
    for name in wall:
        out[name] = {
            "warmup_wall_s": wall[name][:warm],
            "frame_cpu_s": cpu[name][warm:],
            "s_per_frame": float(np.mean(cpu[name][warm:])) if len(cpu[name]) > warm else None,
            "wall_s_per_frame": float(np.mean(wall[name][warm:])) if len(wall[name]) > warm else None,
        }
    if "compiled" in out and len(out["compiled"]["warmup_wall_s"]) == warm:
        out["compile_s"] = sum(out["compiled"]["warmup_wall_s"]) - sum(out["baseline"]["warmup_wall_s"])
    if out.get("compiled", {}).get("s_per_frame") and out["baseline"]["s_per_frame"] and \
            len(out["compiled"]["frame_cpu_s"]) == n_frames:
        out["ratio"] = out["compiled"]["s_per_frame"] / out["baseline"]["s_per_frame"]
        # per-frame ratios: frame i of both engines ran back to back
        r = [c / b for c, b in zip(out["compiled"]["frame_cpu_s"], out["baseline"]["frame_cpu_s"])]
        out["ratio_median_per_frame"] = float(np.median(r))
    out["max_prob_diff"] = max(probs_diff) if probs_diff else None
    out["label_agreement"] = agree_num / agree_den if agree_den else None
    out["min_frame_label_agreement"] = min(per_frame_agree) if per_frame_agree else None
    c = dyn_utils.counters
    out["unique_graphs"] = int(c["stats"].get("unique_graphs", 0))
    out["dynamo_counters"] = {k: dict(v) for k, v in c.items() if k in ("stats", "recompiles", "frames")}
    out["graph_breaks"] = int(sum(c["graph_break"].values()))
    out["graph_break_reasons"] = list(c["graph_break"].keys())[:5]
    return out


# ------------------------------------------------------------------------------------------------ parent
def _run_child(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_compile_inductor_") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, TORCH_LOGS="recompiles", OMP_NUM_THREADS=str(spec["threads"]),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True,
                                  text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(spec, error=f"timed out after {timeout:.0f} s")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return dict(spec, error=f"child rc {proc.returncode}: " + (err[-1][:300] if err else "no output"))
        res = json.loads(lines[-1])
        res["child_wall_s"] = time.perf_counter() - t0
        # TORCH_LOGS=recompiles: one "Recompiling function ..." line per recompilation, followed by the failed guard
        lines = proc.stderr.splitlines()
        rec = [i for i, ln in enumerate(lines) if "Recompiling function" in ln]
        res["recompiles"] = len(rec)
        res["recompile_reasons"] = [" | ".join(x.strip()[:200] for x in lines[i:i + 3]) for i in rec][:10]
        return res


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(rows: list[dict]) -> str:
    hdr = (f"{'model':<13} {'prec':<8} {'mode':<17} {'compile s':>9} {'base s/f':>9} {'comp s/f':>9} "
           f"{'ratio':>6} {'med r':>6} {'labels=':>8} {'maxdprob':>9} {'recomp':>6} {'breaks':>6}  error")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        b = r.get("baseline", {}).get("s_per_frame")
        c = r.get("compiled", {}).get("s_per_frame")
        la = r.get("label_agreement")
        lines.append(
            f"{r['model']:<13} {r['precision'] + ('/s' + str(r['fp32_stride']) if r.get('fp32_stride') is not None and r['precision'] != 'fp32' else ''):<8} {r['mode']:<17} {_fmt(r.get('compile_s'), '9.1f')} "
            f"{_fmt(b, '9.3f')} {_fmt(c, '9.3f')} {_fmt(r.get('ratio'), '6.3f')} "
            f"{_fmt(r.get('ratio_median_per_frame'), '6.3f')} "
            f"{_fmt(None if la is None else 100 * la, '7.3f')}% {_fmt(r.get('max_prob_diff'), '9.2e')} "
            f"{_fmt(r.get('recompiles'), '6d')} {_fmt(r.get('graph_breaks'), '6d')}  {r.get('error', '')}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        print(json.dumps(_child(json.loads(sys.argv[2]))), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rdevos-lite2", help="embedded model name, or 'official' (random weights)")
    ap.add_argument("--precision", default="bf16,fp32", help="comma-separated: fp32, bf16")
    ap.add_argument("--modes", default="compile,compile-fake,plain-freeze", help=f"comma-separated of {', '.join(MODES)}")
    ap.add_argument("--frames", type=int, default=10, help="timed frames (after --warmup frames)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up frames (all compilation happens here)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (and OMP_NUM_THREADS) in the children")
    ap.add_argument("--resolution", type=int, default=480)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--fp32-stride", type=int, default=None,
                    help="InferenceConfig.fp32_stride for both engines (default: the config's, 8). The plain-* modes "
                         "run every bf16 layer under autocast, i.e. like fp32_stride 0: compare them at 0 too")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per (precision, mode) child")
    ap.add_argument("-o", "--output", help="write all results as JSON")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of earlier -o files")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.table:
        print(_table([r for f in args.table for r in json.loads(Path(f).read_text())]))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}; choose from {MODES}")
    rows = []
    for prec in [p.strip() for p in args.precision.split(",") if p.strip()]:
        for mode in modes:
            spec = {"model": args.model, "precision": prec, "mode": mode, "frames": args.frames,
                    "warmup": args.warmup, "threads": args.threads, "resolution": args.resolution,
                    "objects": args.objects, "fp32_stride": args.fp32_stride}
            logger.info("running %s %s %s ...", args.model, prec, mode)
            res = _run_child(spec, args.timeout)
            logger.info("  done: compile %s s, ratio %s%s", _fmt(res.get("compile_s"), ".1f"),
                        _fmt(res.get("ratio"), ".3f"), f", error {res['error']}" if res.get("error") else "")
            rows.append(res)
            if args.output:  # after every child: partial results survive an interrupted run
                Path(args.output).write_text(json.dumps(rows, indent=1))
    print(_table(rows))


if __name__ == "__main__":
    main()
