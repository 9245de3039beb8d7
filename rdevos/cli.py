"""Command line: ``rdevos segment | eval | train | bench | models``. The only argparse in the package."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdevos.config import InferenceConfig
    from rdevos.model.network import RDEVOS

logger = logging.getLogger("rdevos")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _setup_logging(verbose: int, quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun only rank 0 logs at INFO
    level = logging.WARNING if (quiet or rank != 0) else (logging.DEBUG if verbose > 1 else logging.INFO)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if rank == 0 else \
        f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt)


def _peak_rss_mib() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024 if sys.platform != "darwin" else ru / (1024 * 1024)


def _inference_config(args: argparse.Namespace, preset: str, precision: str, model: RDEVOS | None = None
                      ) -> InferenceConfig:
    """The preset, then the model's own inference defaults (e.g. its training resolution), then the command
    line's --resolution/--top-k/--mem-every and the precision."""
    from rdevos.config import InferenceConfig, Precision

    defaults = model.inference_defaults if model is not None else None
    if defaults:
        logger.info("model inference defaults: %s", defaults)
    changes: dict[str, object] = {"precision": Precision(precision)}
    if args.resolution is not None:
        changes["resolution"] = None if args.resolution == "native" else int(args.resolution)
    if args.top_k is not None:
        changes["top_k"] = args.top_k
    if args.mem_every is not None:
        changes["mem_every"] = args.mem_every
    return InferenceConfig.for_model(defaults, preset, **changes)


# ---------------------------------------------------------------------------------------------------- segment
def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", parents=[_COMMON], help="segment objects through a video or a folder of frames",
        description="Propagate object masks through a video. INPUT is a folder of frames (jpg/png/webp, natural "
                    "order), a video file (mp4/mov/mkv/avi/webm) or a stream URL. Writes one palette PNG per frame "
                    "into OUT as each frame is done; re-running into OUT resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="frame folder, video file or stream URL")
    p.add_argument("--mask", action="append", default=[], metavar="PNG[@FRAME]",
                   help="label mask (palette or greyscale PNG) for frame FRAME (default 0); repeatable")
    p.add_argument("--masks-dir", type=Path, help="folder of masks named like the frames (or by frame index)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder for the palette PNGs")
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="default: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32")
    p.add_argument("--preset", default="modelscope", choices=["modelscope", "davis2017", "davis2016", "youtubevos"])
    p.add_argument("--resolution", default=None, help="short side to resize to, or 'native' (default: preset)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--mem-every", type=int, default=None)
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="forward")
    p.add_argument("--overlay", type=Path, help="write an H.264 mp4 with coloured masks over the frames")
    p.add_argument("--gif", type=Path, help="write a small animated GIF preview")
    p.add_argument("--save-probs", action="store_true", help="also store soft masks (OUT/probs/*.npz)")
    p.add_argument("--per-object", action="store_true", help="also write OUT/objects/<id>/<frame>.png (0/255)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster frames)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_segment)


def _parse_masks(args: argparse.Namespace, names: list[str] | None) -> list[tuple[int, Path]]:
    from rdevos.errors import InputError

    out: list[tuple[int, Path]] = []
    for spec in args.mask:
        path, _, frame = spec.rpartition("@") if "@" in spec else (spec, "", "0")
        try:
            idx = int(frame)
        except ValueError:
            raise InputError(f"--mask {spec!r}: the part after '@' must be a frame index") from None
        out.append((idx, Path(path)))
    if args.masks_dir:
        d = Path(args.masks_dir)
        if not d.is_dir():
            raise InputError(f"--masks-dir {d} is not a folder")
        lookup = {n: i for i, n in enumerate(names or [])}
        for f in sorted(d.glob("*.png")):
            if f.stem in lookup:
                out.append((lookup[f.stem], f))
            elif f.stem.isdigit():
                out.append((int(f.stem), f))
            else:
                raise InputError(f"mask {f} matches no frame name and is not a frame index")
    if not out:
        raise InputError("no mask given: pass --mask FIRST.png (for frame 0) or --masks-dir DIR")
    for _, f in out:
        if not f.is_file():
            raise InputError(f"mask file not found: {f}")
    return sorted(out)


def _signature(args: argparse.Namespace, masks: list[tuple[int, Path]], config: object) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(Path(args.input).resolve()) if os.path.exists(args.input) else args.input,
                         args.model, args.direction, repr(config)]).encode())
    for idx, f in masks:
        h.update(str(idx).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _cmd_segment(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from rdevos.device import default_precision, resolve_device
    from rdevos.errors import InputError
    from rdevos.hub import load_model
    from rdevos.inference.session import Direction, VideoSession
    from rdevos.io.frames import open_frames
    from rdevos.io.masks import (DAVIS_PALETTE, atomic_write, read_mask, write_mask, write_object_masks,
                                 write_probabilities)

    if not os.path.exists(args.input) and "://" not in args.input and not args.input.startswith("/dev/"):
        raise InputError(f"input not found: {args.input}")
    device = resolve_device(args.device)
    source = open_frames(args.input)
    names = source.names
    masks = _parse_masks(args, names)
    model = load_model(args.model, device=device)
    config = _inference_config(args, args.preset, args.precision or default_precision(device).value, model)
    if args.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    session = VideoSession(model, source, config, device=device)
    palette = None
    for idx, f in masks:
        lm = read_mask(f)
        if palette is None:
            palette = lm.palette
        known = set(session.object_ids)
        new = [int(i) for i in lm.object_ids if int(i) not in known]
        if known and new:
            logger.warning("mask %s (frame %d) has labels %s not in earlier masks: tracked as new objects from there",
                           f, idx, new)
        session.add_mask(idx, lm.labels)
    palette = palette or list(DAVIS_PALETTE)

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / ".rdevos-resume.pt"
    meta_file = out / ".rdevos-run.json"
    sig = _signature(args, masks, config)
    resume = None
    done = False
    if args.overwrite:
        for f in out.glob("*.png"):
            f.unlink()
        state_file.unlink(missing_ok=True)
        meta_file.unlink(missing_ok=True)
    elif meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("signature") != sig:
            raise InputError(f"{out} holds results of a different run (other input, masks, model or settings); "
                             "use --overwrite to replace them or choose another folder")
        done = bool(meta.get("complete"))
        if done:
            logger.info("%s is complete already; nothing to do (use --overwrite to redo)", out)
        elif state_file.exists():
            st = torch.load(state_file, map_location="cpu", weights_only=True)
            resume = (st["direction"], int(st["frame"]), st["state"])
            logger.info("resuming the %s pass after frame %d", st["direction"], st["frame"])
    elif any(out.glob("*.png")):
        raise InputError(f"{out} already holds PNG files from another tool; use --overwrite or another folder")

    if not done:
        with atomic_write(meta_file) as fh:
            fh.write(json.dumps({"signature": sig, "complete": False, "input": args.input,
                                 "settings": config.to_dict()}).encode())

        def checkpoint(direction: Direction, frame: int, state: dict) -> None:
            with atomic_write(state_file) as fh:
                torch.save({"direction": direction.value, "frame": frame, "state": state}, fh)

        total = source.num_frames
        t0 = time.perf_counter()
        n = 0
        bar = tqdm(total=total, unit="frame", desc="segment", disable=args.no_progress, dynamic_ncols=True)
        for fr in session.propagate(direction=Direction(args.direction), return_probs=args.save_probs,
                                    checkpoint=checkpoint, resume=resume):
            write_mask(out / f"{fr.name}.png", fr.labels, palette)
            if args.save_probs and fr.prob is not None:
                write_probabilities(out / "probs" / f"{fr.name}.npz", fr.prob.cpu().numpy(), [0, *fr.object_ids])
            if args.per_object:
                write_object_masks(out / "objects", fr.name, fr.labels, fr.object_ids)
            n += 1
            bar.update(1)
        bar.close()
        dt = time.perf_counter() - t0
        with atomic_write(meta_file) as fh:
            fh.write(json.dumps({"signature": sig, "complete": True, "input": args.input,
                                 "settings": config.to_dict(), "frames_this_run": n,
                                 "seconds": round(dt, 2)}).encode())
        state_file.unlink(missing_ok=True)
        mem = f"peak RSS {_peak_rss_mib():.0f} MiB"
        if device.type == "cuda":
            mem += f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        logger.info("segmented %d frames in %.1f s (%.2f frames/s), %s -> %s", n, dt, n / max(dt, 1e-9), mem, out)
        print(f"wrote {n} masks to {out} ({n / max(dt, 1e-9):.2f} frames/s, {mem})")

    if args.overlay or args.gif:
        _write_previews(args, source, out, palette)
    return EXIT_OK


def _write_previews(args: argparse.Namespace, source: object, out: Path, palette: Sequence[int]) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from rdevos.io.masks import read_mask
    from rdevos.io.overlay import GifWriter, OverlayWriter

    fps = getattr(source, "fps", None) or 24.0
    h, w = source.size  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        writers: list[OverlayWriter | GifWriter] = []
        if args.overlay:
            writers.append(stack.enter_context(OverlayWriter(args.overlay, fps, (h, w), palette)))
        if args.gif:
            writers.append(stack.enter_context(GifWriter(args.gif, fps, palette=palette)))
        for fr in tqdm(source, total=source.num_frames, unit="frame", desc="overlay",  # type: ignore[attr-defined]
                       disable=args.no_progress):
            p = out / f"{fr.name}.png"
            labels = read_mask(p).labels if p.exists() else np.zeros((h, w), np.uint8)
            for wr in writers:
                wr.write(fr.image, labels)
    for target in (args.overlay, args.gif):
        if target:
            print(f"wrote {target}")


# ---------------------------------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", parents=[_COMMON], help="DAVIS J&F of predicted masks (official-toolkit numbers)",
                       description="Compute J (region IoU) and F (boundary F-measure) exactly as the official "
                                   "davis2017-evaluation code (semi-supervised), and write its CSV files.")
    p.add_argument("--gt", type=Path, required=True, help="annotations folder (<seq>/<frame>.png)")
    p.add_argument("--pred", type=Path, required=True, help="predictions folder (<seq>/<frame>.png)")
    p.add_argument("--sequences", nargs="*", help="only these sequences (default: all in --gt)")
    p.add_argument("-o", "--output", type=Path, help="where to write the CSVs (default: --pred)")
    p.add_argument("--split", default="val", help="name used in the CSV file names")
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: CPU count)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rdevos.eval import evaluate_davis, format_table, write_official_csvs

    res = evaluate_davis(args.gt, args.pred, args.sequences, processes=args.processes, progress=True)
    paths = write_official_csvs(res, args.output or args.pred, split=args.split)
    print(format_table(res))
    print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- run-dataset
def _add_run_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run-dataset", parents=[_COMMON], help="segment every sequence of a dataset (resumable, shardable)",
        description="Segment a DAVIS / YouTube-VOS / generic dataset into OUT/<seq>/<frame>.png with the dataset's "
                    "official preset. Finished sequences are skipped on re-runs. Under torchrun (or with --shard "
                    "I/N) each process takes a deterministic share of the sequences.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=["davis2016", "davis2017", "youtubevos", "generic"], default="davis2017")
    p.add_argument("--root", type=Path, required=True, help="dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--method", choices=["model", "copy-first-mask", "flow"], default="model")
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--sequences", nargs="*", help="only these sequences")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="fp32 reproduces the reference numerics")
    p.add_argument("--resolution", default=None, help="override the preset's short side, or 'native'")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--mem-every", type=int, default=None)
    p.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (default: RANK/WORLD_SIZE)")
    p.add_argument("--all-frames-root", type=Path, default=None,
                   help="YouTube-VOS: every frame (valid_all_frames); default: found next to the split")
    p.add_argument("--no-all-frames", action="store_true", help="YouTube-VOS: segment the required frames only")
    p.add_argument("--eval", action="store_true", help="score the predictions (DAVIS J&F) when all are done")
    p.add_argument("--zip", type=Path, help="write a submission zip when all sequences are done")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_run_dataset)


def _cmd_run_dataset(args: argparse.Namespace) -> int:
    from rdevos.device import resolve_device
    from rdevos.errors import InputError
    from rdevos.eval.runners import Dataset, Method, find_layout, make_submission_zip, run_dataset

    ds = Dataset(args.dataset)
    if args.eval and ds is Dataset.YOUTUBEVOS:
        raise InputError("--eval needs full ground truth; YouTube-VOS validation masks are not public: submit the "
                         "--zip to the evaluation server")
    if args.shard:
        try:
            rank, world = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise InputError(f"--shard must look like I/N, got {args.shard!r}") from None
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(args.device)
    if world > 1 and device.type == "cuda":
        import torch

        local = int(os.environ.get("LOCAL_RANK", rank))
        device = resolve_device(f"cuda:{local % max(1, torch.cuda.device_count())}")
    model = None
    if Method(args.method) is Method.MODEL:
        from rdevos.hub import load_model

        model = load_model(args.model, device=device)
    config = _inference_config(args, ds.preset, args.precision, model)
    s = run_dataset(args.root, args.output, dataset=ds, split=args.split, model=model, method=args.method,
                    config=config, device=device, sequences=args.sequences, rank=rank, world_size=world,
                    all_frames_root=args.all_frames_root, detect_all_frames=not args.no_all_frames,
                    progress=not args.no_progress)
    print(f"shard {rank}/{world}: {len(s.done)} sequences done, {len(s.skipped)} already finished, "
          f"{s.frames} frames at {s.fps:.2f} frames/s")
    seqs = args.sequences or find_layout(args.root, ds, args.split).sequences
    complete = all((args.output / q).is_dir() for q in seqs)
    if (args.eval or args.zip) and not complete:
        print("other shards are still running; run the same command again (or --eval/--zip) once they finish")
        return EXIT_OK
    if args.zip:
        make_submission_zip(args.output, args.zip, dataset=ds, sequences=seqs)
        print(f"wrote {args.zip}")
    if args.eval:
        from rdevos.eval import evaluate_davis, format_table, write_official_csvs

        res = evaluate_davis(find_layout(args.root, ds, args.split).annotations, args.output, seqs)
        write_official_csvs(res, args.output, split=args.split)
        print(format_table(res))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", parents=[_COMMON], help="frames/s and peak memory per resolution, video length, precision, device",
        description="Measure speed and peak memory (RSS; CUDA max allocated on GPU) of the engine on the bundled "
                    "sample clip, looped to each length. Every configuration runs in a fresh process, so peaks do "
                    "not mix. Without --model: the official architecture with random weights (speed and memory do "
                    "not depend on the weights). --reference also runs the ModelScope reference (CPU, fp32; only "
                    "from a source checkout).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--resolutions", default="480", help="short sides in pixels, comma-separated")
    p.add_argument("--lengths", default="25,100", help="video lengths in frames, comma-separated")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16,fp16")
    p.add_argument("--device", default="auto", help="comma-separated: auto,cpu,cuda,mps")
    p.add_argument("--objects", type=int, default=2)
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: random official weights)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--mem-every", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up frames before each timed video")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, see OMP_NUM_THREADS)")
    p.add_argument("--reference", action="store_true", help="also measure the reference implementation")
    p.add_argument("--max-reference-length", type=int, default=400, help="longest video for the O(T) reference")
    p.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    p.add_argument("-o", "--output", type=Path, help="write the results as JSON")
    p.add_argument("--plot", type=Path, help="PNG of s/frame and peak memory against length (needs rdevos[bench])")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from rdevos.eval import bench

    if args.plot:
        bench.require_matplotlib()  # fail before minutes of measuring
    report = bench.run_bench(
        resolutions=bench.parse_int_list(args.resolutions, "--resolutions"),
        lengths=bench.parse_int_list(args.lengths, "--lengths"),
        precisions=[x.strip() for x in args.precision.split(",") if x.strip()],
        devices=[x.strip() for x in args.device.split(",") if x.strip()], objects=args.objects, model=args.model,
        reference=args.reference, top_k=args.top_k, mem_every=args.mem_every, warmup=args.warmup,
        threads=args.threads, max_reference_length=args.max_reference_length, timeout=args.timeout,
        progress=not args.no_progress)
    print(bench.format_bench_table(report))
    if args.output:
        print(f"wrote {report.write_json(args.output)}")
    if args.plot:
        print(f"wrote {bench.plot_report(report, args.plot)}")
    return EXIT_OK if all(r.error is None for r in report.rows) else EXIT_ERROR


# ---------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", parents=[_COMMON], help="train a model (all stages of a YAML config; resumable; works under torchrun)",
                       description="Train RDE-VOS. Presets live in configs/*.yaml; override fields with dotted "
                                   "KEY=VALUE pairs. Several processes/GPUs: torchrun --nproc_per_node N -m "
                                   "rdevos.train --config X.yaml.")
    p.add_argument("--config", required=True, help="YAML preset, e.g. configs/lite-davis.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. stages.0.iterations=100 precision=fp32")
    p.add_argument("--no-resume", action="store_true", help="start fresh (refused if output_dir has checkpoints)")
    p.add_argument("--resume-from", default=None, help="resume from this training checkpoint file")
    p.add_argument("--max-iterations", type=int, default=None,
                   help="stop after this many iterations in this call (a resumable checkpoint is written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from rdevos.train import TrainConfig, run_training

    config = TrainConfig.from_yaml(args.config, args.overrides)
    resume: bool | str = args.resume_from if args.resume_from else not args.no_resume
    path = run_training(config, resume=resume, progress=not args.no_progress, max_iterations=args.max_iterations)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(path)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- serve
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", parents=[_COMMON], help="web app: segment a video in the browser (needs rdevos[web])",
        description="Start the web app (Gradio). Upload a video or frames, draw objects, run in the background, "
                    "fix frames, download masks and an overlay video. Jobs and results live in --work-dir; a run "
                    "goes on when the page is closed and a restarted server lists (and continues) earlier jobs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything else than this machine gets "
                                                       "access without login")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--work-dir", type=Path, default=Path("rdevos-work"), help="folder for jobs, uploads and results")
    p.add_argument("--model", help="default checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps")
    p.add_argument("--resolution", default="480", help="default short side to resize to, or 'native'")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload accepted (MiB)")
    p.add_argument("--max-frames", type=int, default=10000, help="most frames per video")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from rdevos.errors import InputError, RDEVOSError

    if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("rdevos_web") is None:
        raise RDEVOSError("the web app needs the optional 'web' extra: pip install 'rdevos[web]'")
    from rdevos_web import ServeOptions, serve
    from rdevos_web.jobs import RunSettings

    if args.resolution != "native" and not (args.resolution.isdigit() and int(args.resolution) >= 16):
        raise InputError(f"--resolution must be 'native' or a number >= 16, got {args.resolution!r}")
    settings = RunSettings(model=args.model, device=args.device,
                           resolution=None if args.resolution == "native" else int(args.resolution))
    serve(ServeOptions(work_dir=args.work_dir, host=args.host, port=args.port, settings=settings,
                       max_upload_mb=args.max_upload_mb, max_frames=args.max_frames, open_browser=args.open))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", parents=[_COMMON], help="export the per-frame graphs to ONNX or TorchScript",
        description="Write the key encoder, value encoder, segment (memory read + decoder) and compress (RDE "
                    "update) graphs with dynamic frame size, and manifest.json with the settings and "
                    "preprocessing. Run an ONNX export without torch: rdevos.export.OnnxEngine(OUT) "
                    "(pip install 'rdevos[export]').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--model", required=True, help="checkpoint, ModelScope dir/id, URL or name")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--objects", default="dynamic", help="a fixed number of objects K, or 'dynamic'")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--preset", default="modelscope", choices=["modelscope", "davis2017", "davis2016", "youtubevos"],
                   help="inference settings recorded in the manifest")
    p.add_argument("--resolution", default=None, help="short side to resize to, or 'native' (default: preset)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--mem-every", type=int, default=None)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from rdevos.export import export_model
    from rdevos.hub import load_model

    model = load_model(args.model, device="cpu")
    config = _inference_config(args, args.preset, args.precision, model)
    manifest = export_model(model, args.output, format=args.format, config=config, precision=args.precision,
                            objects=args.objects, opset=args.opset)
    print(f"wrote {args.format} export ({args.precision}, objects {args.objects}) to {manifest.parent}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", parents=[_COMMON], help="list named models")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from rdevos.hub.registry import REGISTRY

    for name, spec in sorted(REGISTRY.items()):
        print(f"{name}\n    {spec.description} [{spec.license}]")
    return EXIT_OK


def _common_parser() -> argparse.ArgumentParser:
    # -v/-q work before or after the subcommand; SUPPRESS keeps a subcommand from resetting the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings only")
    return common


_COMMON = _common_parser()


def build_parser() -> argparse.ArgumentParser:
    from rdevos import __version__

    parser = argparse.ArgumentParser(prog="rdevos", description="RDE-VOS video object segmentation.")
    parser.add_argument("--version", action="version", version=f"rdevos {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_segment(sub)
    _add_eval(sub)
    _add_run_dataset(sub)
    _add_export(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_models(sub)
    _add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage)."""
    from rdevos.errors import RDEVOSError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except RDEVOSError as e:
        print(f"rdevos: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("rdevos: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
