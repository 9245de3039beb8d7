"""``rdevos bench | train | serve | export | models``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from rdevos.errors import UsageError
from rdevos.cli._common import (_MODEL_HELP, _PRESET_HELP, EXIT_ERROR, EXIT_OK, PRESETS, _add_device,
                                _add_memory_options, _add_model, _add_no_progress, _add_precision, _choice, _command,
                                _csv_of, _device, _inference_config, _non_negative_int, _objects_spec, _port,
                                _positive_float, _positive_int, _resolution, check_device, check_input_file,
                                check_output_dir, check_output_file)


# ---------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "bench", _cmd_bench, help="frames/s and peak memory per resolution, video length, precision, device",
        description="Measure speed and peak memory (RSS; CUDA max allocated on GPU) of the engine on the bundled "
                    "sample clip, looped to each length. Every configuration runs in a fresh process, so peaks do "
                    "not mix. Without --model: the official architecture with random weights (speed and memory do "
                    "not depend on the weights). --reference also runs the ModelScope reference (CPU, fp32; only "
                    "from a source checkout).")
    p.add_argument("--resolutions", type=_csv_of(_resolution_px, "short side"), default=[480], metavar="LIST",
                   help="short sides in pixels (>= 16), comma-separated (default: 480)")
    p.add_argument("--lengths", type=_csv_of(_positive_int, "length"), default=[25, 100], metavar="LIST",
                   help="video lengths in frames, comma-separated (default: 25,100)")
    p.add_argument("--precision", type=_csv_of(_choice("fp32", "bf16", "fp16"), "precision"), default=["fp32"],
                   metavar="LIST", help="comma-separated: fp32,bf16,fp16 (default: fp32)")
    p.add_argument("--device", type=_csv_of(_device, "device"), default=["auto"], metavar="LIST",
                   help="comma-separated: auto,cpu,cuda,cuda:N,mps (default: auto)")
    p.add_argument("--objects", type=_positive_int, default=2, help="objects tracked (the sample object split "
                                                                    "into this many parts)")
    _add_model(p, "random official weights")
    p.add_argument("--top-k", type=_positive_int, default=40, metavar="K", help="memory entries each query pixel reads")
    p.add_argument("--mem-every", type=_positive_int, default=3, metavar="N",
                   help="add a frame to the memory every N frames")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed warm-up frames before each timed video")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default: torch's, see OMP_NUM_THREADS)")
    p.add_argument("--reference", action="store_true", help="also measure the reference implementation")
    p.add_argument("--max-reference-length", type=_positive_int, default=400,
                   help="longest video for the O(T) reference")
    p.add_argument("--peers", action="store_true",
                   help="also SAM 2.1-tiny/small and Cutie-small/base with random weights, same clip, masks and "
                        "settings (CPU, fp32; needs pip install 'rdevos[peers]')")
    p.add_argument("--timeout", type=_positive_float, default=None, help="seconds per configuration")
    p.add_argument("-o", "--output", type=Path, help="write the results as JSON")
    p.add_argument("--plot", type=Path, help="PNG of s/frame and peak memory against length (needs rdevos[bench])")
    _add_no_progress(p)


def _resolution_px(text: str) -> int:
    value = _resolution(text)
    if isinstance(value, str):
        raise argparse.ArgumentTypeError("must be a short side in pixels (>= 16)")
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    from rdevos.eval import bench

    for d in args.device:
        if d != "auto":
            check_device(d)
    if args.output:
        check_output_file(args.output, "-o/--output")
    if args.plot:
        check_output_file(args.plot, "--plot", (".png",))
        bench.require_matplotlib()  # fail before minutes of measuring
    if args.peers:
        bench.require_peers()
    report = bench.run_bench(
        resolutions=args.resolutions, lengths=args.lengths, precisions=args.precision, devices=args.device,
        objects=args.objects, model=args.model, reference=args.reference, top_k=args.top_k,
        mem_every=args.mem_every, warmup=args.warmup, threads=args.threads,
        max_reference_length=args.max_reference_length, timeout=args.timeout, peers=args.peers,
        progress=not args.no_progress)
    print(bench.format_bench_table(report))
    if args.output:
        print(f"wrote {report.write_json(args.output)}")
    if args.plot:
        print(f"wrote {bench.plot_report(report, args.plot)}")
    return EXIT_OK if all(r.error is None for r in report.rows) else EXIT_ERROR


# ---------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "train", _cmd_train,
                 help="train a model (all stages of a YAML config; resumable; works under torchrun)",
                 description="Train RDE-VOS. Presets live in configs/*.yaml; override fields with dotted KEY=VALUE "
                             "pairs. Several processes/GPUs: torchrun --nproc_per_node N -m rdevos.train --config "
                             "X.yaml.")
    p.add_argument("--config", type=Path, required=True, help="YAML preset, e.g. configs/lite-davis.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. stages.0.iterations=100 precision=fp32")
    p.add_argument("--no-resume", action="store_true", help="start fresh (refused if output_dir has checkpoints)")
    p.add_argument("--resume-from", type=Path, default=None, help="resume from this training checkpoint file")
    p.add_argument("--max-iterations", type=_positive_int, default=None,
                   help="stop after this many iterations in this call (a resumable checkpoint is written)")
    _add_no_progress(p)


def _cmd_train(args: argparse.Namespace) -> int:
    from rdevos.train import TrainConfig, run_training

    check_input_file(args.config, "--config")
    bad = [o for o in args.overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise UsageError(f"overrides must look like KEY=VALUE (e.g. stages.0.iterations=100), got {bad[0]!r}")
    if args.resume_from is not None:
        check_input_file(args.resume_from, "--resume-from")
        if args.no_resume:
            raise UsageError("--resume-from and --no-resume contradict each other; give one")
    config = TrainConfig.from_yaml(str(args.config), args.overrides)
    resume: bool | str = str(args.resume_from) if args.resume_from else not args.no_resume
    path = run_training(config, resume=resume, progress=not args.no_progress, max_iterations=args.max_iterations)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(path)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- serve
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "serve", _cmd_serve, help="web app: segment a video in the browser (needs rdevos[web])",
        description="Start the web app (Gradio). Upload a video or frames, draw objects, run in the background, "
                    "fix frames, download masks and an overlay video. Jobs and results live in --work-dir; a run "
                    "goes on when the page is closed and a restarted server lists (and continues) earlier jobs.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything else than this machine gets "
                                                       "access without login")
    p.add_argument("--port", type=_port, default=7860, help="port to listen on")
    p.add_argument("--work-dir", type=Path, default=Path("rdevos-work"), help="folder for jobs, uploads and results")
    _add_model(p, what="default ")
    _add_device(p)
    p.add_argument("--resolution", type=_resolution, default=480,
                   help="short side new jobs resize to (>= 16), or 'native'")
    p.add_argument("--max-upload-mb", type=_positive_float, default=500.0, help="largest upload accepted (MiB)")
    p.add_argument("--max-frames", type=_positive_int, default=10000, help="most frames per video")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--prompt-model", help="box/click-to-mask model of the editor (default: embedded model)")


#: Plugin hook: commands that live outside the library, found through this entry-point group (``rdevos_web``
#: registers ``serve``); the fallback module covers installs made before the entry point existed.
PLUGIN_GROUP = "rdevos.commands"
_PLUGIN_FALLBACK = {"serve": "rdevos_web.server:serve_command"}


def _plugin(name: str, extra: str) -> Callable[..., int]:
    """The command ``name`` of an installed plugin; RDEVOSError naming the extra to install when there is none."""
    import importlib
    import importlib.metadata
    import importlib.util

    from rdevos.errors import RDEVOSError

    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    module, _, attr = _PLUGIN_FALLBACK[name].partition(":")
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise RDEVOSError(f"'rdevos {name}' needs the optional '{extra}' extra: pip install 'rdevos[{extra}]'")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from rdevos.errors import RDEVOSError

    if importlib.util.find_spec("gradio") is None:
        raise RDEVOSError("the web app needs the optional 'web' extra: pip install 'rdevos[web]'")
    serve_command = _plugin("serve", "web")
    check_output_dir(args.work_dir, "--work-dir")
    check_device(args.device)
    return serve_command(work_dir=args.work_dir, host=args.host, port=args.port, model=args.model,
                         device=args.device, resolution=None if args.resolution == "native" else int(args.resolution),
                         max_upload_mb=args.max_upload_mb, max_frames=args.max_frames, open_browser=args.open,
                         prompt_model=args.prompt_model)


# ---------------------------------------------------------------------------------------------------- export
#: Options of ``rdevos export`` that only a video model (--model) has: dest -> option as written.
_VOS_ONLY = {"objects": "--objects", "preset": "--preset", "resolution": "--resolution", "top_k": "--top-k",
             "mem_every": "--mem-every"}


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "export", _cmd_export, help="export the per-frame graphs (or the prompt model) to ONNX or TorchScript",
        description="Write the key encoder, value encoder, segment (memory read + decoder) and compress (RDE "
                    "update) graphs with dynamic frame size, and manifest.json with the settings and "
                    "preprocessing. Before it reports success, the export runs the written graphs at a frame size, "
                    "object count and top-k they were not traced with and compares them with PyTorch (exit 1 if "
                    "they differ). Run an ONNX export without torch: rdevos.export.OnnxEngine(OUT) "
                    "(pip install 'rdevos[export]'). With --prompt-model: the box/click-to-mask model instead, "
                    "run with rdevos.export.OnnxPromptPredictor(OUT).")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True, help="graph format")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help=f"video model to export: {_MODEL_HELP}")
    which.add_argument("--prompt-model", metavar="MODEL",
                       help="export the prompt (box/click to mask) model instead: rdevos-prompt-lite2 (the embedded "
                            "one), a checkpoint path or URL")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_precision(p, "fp32", "weights and activations", ("fp32", "fp16"))
    p.add_argument("--objects", type=_objects_spec, default=None,
                   help="a fixed number of objects K in the graphs' shapes, or 'dynamic' (any number; the default)")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--preset", default=None, choices=PRESETS,
                   help="inference settings recorded in the manifest: " + _PRESET_HELP.split(": ", 1)[1])
    _add_memory_options(p)


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    if args.opset is not None and args.format != "onnx":
        raise UsageError(f"--opset is for ONNX exports only (got --format {args.format})")
    if args.prompt_model is not None:
        given = [opt for dest, opt in _VOS_ONLY.items() if getattr(args, dest) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for video models (--model); "
                             "a prompt model has none")
    check_output_dir(args.output, "-o/--output")
    if args.prompt_model is not None:
        from rdevos.export import export_prompt_model
        from rdevos.prompt import load_prompt_model

        net = load_prompt_model(args.prompt_model)
        manifest = export_prompt_model(net, args.output, format=args.format, precision=args.precision,
                                       opset=args.opset)
        what = f"prompt-model {args.format} export ({args.precision})"
    else:
        from rdevos.export import export_model
        from rdevos.hub import load_model

        model = load_model(args.model, device="cpu")
        config = _inference_config(args, args.preset, args.precision, model)
        objects = args.objects or "dynamic"
        manifest = export_model(model, args.output, format=args.format, config=config, precision=args.precision,
                                objects=objects, opset=args.opset)
        what = f"{args.format} export ({args.precision}, objects {objects})"
    sizes = json.loads(manifest.read_text()).get("verification_sizes")
    checked = (f"checked against PyTorch at {' and '.join(f'{h}x{w}' for h, w in sizes)}" if sizes else
               "NOT checked: onnxruntime is not installed")
    print(f"wrote {what} to {manifest.parent} ({checked})")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    _command(sub, "models", _cmd_models, help="list named models, video and prompt (the defaults are marked)")


def _cmd_models(args: argparse.Namespace) -> int:
    from rdevos.hub.registry import DEFAULT_MODEL, DEFAULT_PROMPT_MODEL, PROMPT_REGISTRY, REGISTRY

    print("video models (--model):")
    for name, spec in sorted(REGISTRY.items()):
        mark = " (default: used when no --model / model= is given)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}\n    {spec.description} [{spec.license}]")
    print("\nprompt models (box / clicks to mask: --box, --point, rdevos mask, export --prompt-model):")
    for name, spec in sorted(PROMPT_REGISTRY.items()):
        mark = " (default)" if name == DEFAULT_PROMPT_MODEL else ""
        print(f"{name}{mark}\n    {spec.description} [{spec.license}]")
    return EXIT_OK
