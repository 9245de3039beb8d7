"""``rdevos eval`` and ``rdevos run-dataset``: DAVIS/YouTube-VOS runs and their J&F."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from rdevos.errors import UsageError
from rdevos.cli._common import (EXIT_OK, _add_device, _add_flip, _add_memory_options, _add_model, _add_no_progress,
                                _add_precision, _command, _inference_config, _positive_int, _shard, check_device,
                                check_input_dir, check_output_dir, check_output_file, logger)


# ---------------------------------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "eval", _cmd_eval, help="DAVIS J&F of predicted masks (official-toolkit numbers)",
                 description="Compute J (region IoU) and F (boundary F-measure) exactly as the official "
                             "davis2017-evaluation code (semi-supervised), write its CSV files (3 decimals) and "
                             "results.json (global, per-sequence, per-object and per-frame numbers at full "
                             "precision).")
    p.add_argument("--gt", type=Path, required=True, help="annotations folder (<seq>/<frame>.png)")
    p.add_argument("--pred", type=Path, required=True, help="predictions folder (<seq>/<frame>.png)")
    p.add_argument("--sequences", nargs="*", help="only these sequences (default: all in --gt)")
    p.add_argument("-o", "--output", type=Path, help="where to write the CSVs and results.json (default: --pred)")
    p.add_argument("--split", default="val", help="DAVIS set name used in the CSV file names")
    p.add_argument("--processes", type=_positive_int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of the table")
    _add_no_progress(p)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rdevos.eval import evaluate_davis, format_table, results_dict, write_official_csvs, write_results_json

    check_input_dir(args.gt, "--gt")
    check_input_dir(args.pred, "--pred")
    out = args.output or args.pred
    check_output_dir(out, "-o/--output")
    res = evaluate_davis(args.gt, args.pred, args.sequences, processes=args.processes,
                         progress=not args.no_progress and not args.json)
    paths = [*write_official_csvs(res, out, split=args.split), write_results_json(res, out, split=args.split)]
    if args.json:
        print(json.dumps(results_dict(res, args.split), indent=1, allow_nan=False))
        logger.info("wrote %s", ", ".join(str(p) for p in paths))
    else:
        print(format_table(res))
        print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- run-dataset
def _check_eval_scores_no_inputs(args: argparse.Namespace, ds: object) -> None:
    """--eval must not score a frame the model was given: refuse that for --prompts all, warn for a generic object
    that first appears after the first frame (its first annotation is an input and is scored)."""
    from rdevos.eval.runners import scored_prompts

    hits = scored_prompts(args.root, ds, args.split, args.sequences, args.prompts)  # type: ignore[arg-type]
    if not hits:
        return
    seqs = sorted({s for s, _, _ in hits})
    example = ", ".join(f"{s}/{f}.png" for s, f, _ in hits[:3])
    if args.prompts == "all":
        raise UsageError(f"--eval with --prompts all would score {len(hits)} frame(s) of {len(seqs)} sequence(s) "
                         f"that the model is given as input (e.g. {example}); use --prompts first (the default) "
                         "to evaluate, or drop --eval")
    logger.warning("--eval: %d object(s) first appear after the first frame (e.g. %s); their first annotation is an "
                   "input and is scored too", len(hits), example)


def _add_run_dataset(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "run-dataset", _cmd_run_dataset, help="segment every sequence of a dataset (resumable, shardable)",
        description="Segment a DAVIS / YouTube-VOS / generic dataset into OUT/<seq>/<frame>.png with the dataset's "
                    "official preset (DAVIS: native size, top-k 40, memory every 3rd frame; YouTube-VOS: short side "
                    "480, top-k 20, 4 frames after the last memory frame; it replaces the model's own settings; a "
                    "generic dataset has none and uses the model's). --resolution, --top-k and --mem-every override "
                    "it. Finished sequences are skipped on re-runs. Under torchrun (or with --shard "
                    "I/N) each process takes a deterministic share of the sequences.")
    p.add_argument("--dataset", choices=["davis2016", "davis2017", "youtubevos", "generic"], default="davis2017",
                   help="dataset layout and preset: DAVIS (JPEGImages/480p, Annotations/480p, ImageSets), "
                        "YouTube-VOS (<split>/JPEGImages, Annotations, meta.json) or generic "
                        "(JPEGImages/<seq>, Annotations/<seq>)")
    p.add_argument("--root", type=Path, required=True, help="dataset folder")
    p.add_argument("--split", default="val",
                   help="which sequences: the DAVIS ImageSets list (val, train, test-dev) or the YouTube-VOS "
                        "folder (valid, test)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (OUT/<seq>/<frame>.png)")
    p.add_argument("--method", choices=["model", "copy-first-mask", "flow"], default="model",
                   help="the model, or a baseline: copy the first mask / warp it with optical flow")
    _add_model(p)
    p.add_argument("--sequences", nargs="*", help="only these sequences")
    p.add_argument("--prompts", choices=["first", "all"], default="first",
                   help="which annotations the model is given: first (semi-supervised: each object on the first "
                        "frame holding it; later annotations are ground truth for --eval only) or, generic datasets "
                        "only, all (every annotation PNG is a prompt; refused with --eval where it would score "
                        "frames given as input)")
    _add_device(p)
    _add_precision(p, "fp32", "fp32 reproduces the reference numerics")
    _add_memory_options(p, "short side (>= 16) or 'native' instead of the preset's")
    _add_flip(p)
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="run shard I of N (default: RANK/WORLD_SIZE)")
    p.add_argument("--all-frames-root", type=Path, default=None,
                   help="YouTube-VOS: every frame (valid_all_frames); default: found next to the split")
    p.add_argument("--no-all-frames", action="store_true", help="YouTube-VOS: segment the required frames only")
    p.add_argument("--eval", action="store_true",
                   help="score the predictions (DAVIS J&F, CSVs and results.json in OUT) when all are done")
    p.add_argument("--zip", type=Path, help="write a submission zip when all sequences are done")
    _add_no_progress(p)


def _cmd_run_dataset(args: argparse.Namespace) -> int:
    from rdevos.device import resolve_device
    from rdevos.eval.runners import Dataset, Method, find_layout, make_submission_zip, run_dataset

    ds = Dataset(args.dataset)
    if args.eval and ds is Dataset.YOUTUBEVOS:
        raise UsageError("--eval needs full ground truth; YouTube-VOS validation masks are not public: submit the "
                         "--zip to the evaluation server")
    check_input_dir(args.root, "--root")
    check_output_dir(args.output, "-o/--output")
    if args.all_frames_root is not None:
        check_input_dir(args.all_frames_root, "--all-frames-root")
    if args.zip:
        check_output_file(args.zip, "--zip", (".zip",))
    check_device(args.device)
    from rdevos.errors import InputError

    try:  # a --root of another layout, or --sequences it lacks, is a bad option: said before the model loads
        layout = find_layout(args.root, ds, args.split, all_frames_root=args.all_frames_root,
                             detect_all_frames=not args.no_all_frames)
    except InputError as e:
        raise UsageError(f"--root: {e}") from None
    unknown = sorted(set(args.sequences or ()) - set(layout.sequences))
    if unknown:
        raise UsageError(f"--sequences: {len(unknown)} not in {args.root} (split {args.split}): {unknown[:5]}")
    if args.prompts == "all" and ds is not Dataset.GENERIC:
        raise UsageError(f"--prompts all is for --dataset generic; {ds.value} gives each object's first annotation "
                         "only (its benchmark protocol)")
    if args.eval:
        _check_eval_scores_no_inputs(args, ds)
    if args.shard:
        rank, world = args.shard
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
                    prompts=args.prompts, progress=not args.no_progress)
    print(f"shard {rank}/{world}: {len(s.done)} sequences done, {len(s.skipped)} already finished, "
          f"{s.frames} frames at {s.fps:.2f} frames/s")
    seqs = args.sequences or layout.sequences
    complete = all((args.output / q).is_dir() for q in seqs)
    if (args.eval or args.zip) and not complete:
        print("other shards are still running; run the same command again (or --eval/--zip) once they finish")
        return EXIT_OK
    if args.zip:
        make_submission_zip(args.output, args.zip, dataset=ds, sequences=seqs)
        print(f"wrote {args.zip}")
    if args.eval:
        from rdevos.eval import evaluate_davis, format_table, write_official_csvs, write_results_json

        res = evaluate_davis(layout.annotations, args.output, seqs)
        paths = [*write_official_csvs(res, args.output, split=args.split),
                 write_results_json(res, args.output, split=args.split)]
        print(format_table(res))
        print("wrote " + ", ".join(str(p) for p in paths))
    return EXIT_OK
