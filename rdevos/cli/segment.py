"""``rdevos segment`` and ``rdevos mask``: masks or prompts in, one palette PNG per frame out (resumable)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rdevos.errors import InputError, RDEVOSError, UsageError
from rdevos.cli._common import (_PRESET_HELP, _VIDEO_SUFFIXES, EXIT_OK, PRESETS, _add_device, _add_flip,
                                _add_memory_options, _add_model, _add_no_progress, _add_precision, _command,
                                _inference_config, _int_at_least, _non_negative_int, _peak_rss_mib, check_device,
                                check_input_dir, check_output_dir, check_output_file, logger)


# ---------------------------------------------------------------------------------------------------- segment
def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "segment", _cmd_segment, help="segment objects through a video or a folder of frames",
        description="Propagate object masks through a video. INPUT is a folder of frames (jpg/png/webp, natural "
                    "order), a video file (mp4/mov/mkv/avi/webm) or a stream URL. Writes one palette PNG per frame "
                    "into OUT as each frame is done; re-running into OUT resumes (and adds outputs asked for then); "
                    "rdevos never overwrites or deletes a file in OUT that it did not write. "
                    "Masks may be palette, greyscale "
                    "or colour PNGs (black = background; DAVIS palette colours keep their index, other colours "
                    "are numbered by first appearance, row by row).")
    p.add_argument("input", help="frame folder, video file or stream URL")
    p.add_argument("--mask", action="append", default=[], metavar="PNG[@FRAME]",
                   help="mask for frame FRAME (default 0): palette, greyscale or colour PNG; repeatable")
    p.add_argument("--masks-dir", type=Path, metavar="DIR",
                   help="folder of PNG masks named like the frames (e.g. 00000.png) or by frame index")
    _add_prompt_options(p, objects=True)
    p.add_argument("--prompt-frame", type=_non_negative_int, default=0, metavar="F",
                   help="the frame --box/--point refer to")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="output folder for the palette PNGs (created if missing)")
    _add_model(p)
    _add_device(p)
    _add_precision(p)
    p.add_argument("--preset", default=None, choices=PRESETS, help=_PRESET_HELP)
    _add_memory_options(p)
    _add_flip(p)
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="forward",
                   help="forward from the first mask to the end, backward from the last mask to frame 0, or both "
                        "(every frame: each object forward from its masks and backward from its first mask; frames "
                        "both passes reach take each object from the nearer mask)")
    p.add_argument("--overlay", type=Path, metavar="MP4", help="write an H.264 mp4 with coloured masks over the frames")
    p.add_argument("--gif", type=Path, help="write a small animated GIF preview")
    p.add_argument("--save-probs", action="store_true",
                   help="also store soft masks (OUT/probs/*.npz; not for the fused frames of --direction both)")
    p.add_argument("--per-object", action="store_true",
                   help="also write OUT/objects/<id>/<frame>.png (0/255), every object on every frame")
    p.add_argument("--overwrite", action="store_true",
                   help="start again instead of resuming: delete the files the earlier run in OUT wrote (only those)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster frames)")
    p.add_argument("--threads", type=_int_at_least(1), metavar="N",
                   help="CPU threads for the engine (default: the cores, or OMP_NUM_THREADS): up to 3 run it in one "
                        "thread (results are written from another), 4 or more run the key encoder a frame ahead in "
                        "a second thread, N//2 torch threads each")
    _add_no_progress(p)


def _split_at(spec: str, what: str) -> tuple[str, int]:
    """``PATH@F`` -> ``(PATH, F)``; raises UsageError (naming ``what``) unless F is a frame index >= 0."""
    head, _, tail = spec.rpartition("@")
    try:
        idx = int(tail)
    except ValueError:
        raise UsageError(f"{what}: the part after '@' must be a frame index") from None
    if idx < 0:
        raise UsageError(f"{what}: the frame index must be >= 0")
    return head, idx


_MASKS_DIR_EXPECTS = "PNG masks named like the frames (e.g. 00000.png for frame 00000.jpg) or by frame index"


def _parse_masks(args: argparse.Namespace, names: list[str] | None,
                 num_frames: int | None = None) -> list[tuple[int, Path]]:
    """(frame index, file) of every --mask and --masks-dir mask, sorted; raises UsageError naming the problem
    (also a frame index past the last of ``num_frames`` frames)."""
    out: list[tuple[int, Path]] = []
    for spec in args.mask:
        path, idx = _split_at(spec, f"--mask {spec!r}") if "@" in spec else (spec, 0)
        if num_frames is not None and idx >= num_frames:
            raise UsageError(f"--mask {spec!r}: frame {idx} is past the end of the video ({num_frames} frames, "
                             f"0..{num_frames - 1})")
        if Path(path).is_dir():
            raise UsageError(f"--mask {spec!r}: {path} is a folder, not a mask file (a folder of masks named like "
                             "the frames is --masks-dir)")
        if not Path(path).is_file():
            raise UsageError(f"--mask {spec!r}: mask file not found: {path}")
        out.append((idx, Path(path)))
    if args.masks_dir:
        d = Path(args.masks_dir)
        check_input_dir(d, "--masks-dir")
        lookup = {n: i for i, n in enumerate(names or [])}
        found = sorted(f for f in d.iterdir() if f.suffix.lower() == ".png" and not f.name.startswith("."))
        if not found:
            others = sorted(f.name for f in d.iterdir() if not f.name.startswith("."))
            raise UsageError(f"--masks-dir {d} holds no PNG file (expected {_MASKS_DIR_EXPECTS})"
                             + (f"; it has {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}"
                                if others else "; it is empty"))
        for f in found:
            if f.stem in lookup:
                out.append((lookup[f.stem], f))
            elif f.stem.isdigit():
                if num_frames is not None and int(f.stem) >= num_frames:
                    raise UsageError(f"--masks-dir: mask {f} is for frame {int(f.stem)}, past the end of the video "
                                     f"({num_frames} frames)")
                out.append((int(f.stem), f))
            else:
                raise UsageError(f"--masks-dir: mask {f} matches no frame name and is not a frame index "
                                 f"(expected {_MASKS_DIR_EXPECTS})")
    if not out:
        raise UsageError("no mask given: pass --mask FIRST.png (for frame 0) or --masks-dir DIR")
    return sorted(out)


def _log_mask_objects(masks: list[tuple[int, Path, Any]]) -> None:
    """Objects first given on a later frame are the normal workflow (INFO, from the session); a later mask that
    re-annotates an object tracked from an earlier frame replaces its prediction there: say so (WARNING)."""
    first_frame: dict[int, int] = {}
    for idx, f, lm in masks:
        again = [i for i in lm.object_ids if i in first_frame and first_frame[i] < idx]
        if again:
            logger.warning("mask %s (frame %d) also holds object(s) %s, tracked since frame(s) %s: its pixels replace "
                           "their propagated masks from frame %d on", f, idx, again,
                           sorted({first_frame[i] for i in again}), idx)
        for i in lm.object_ids:
            first_frame.setdefault(i, idx)


def _cmd_segment(args: argparse.Namespace) -> int:
    import torch

    from rdevos.device import default_precision, resolve_device
    from rdevos.hub import load_model
    from rdevos.inference.runs import RunFolderError, run_signature, segment_to_folder
    from rdevos.inference.session import VideoSession
    from rdevos.io.frames import open_frames
    from rdevos.io.masks import DAVIS_PALETTE, validate_mask

    # Every option first: nothing is read, loaded or segmented before the command line is known to be usable.
    if not os.path.exists(args.input) and "://" not in args.input and not args.input.startswith("/dev/"):
        raise UsageError(f"input not found: {args.input} (give a frame folder, a video file or a stream URL)")
    out: Path = args.output
    check_output_dir(out, "-o/--output")
    if args.overlay:
        check_output_file(args.overlay, "--overlay", _VIDEO_SUFFIXES)
    if args.gif:
        check_output_file(args.gif, "--gif")
    check_device(args.device)
    if not args.mask and not args.masks_dir and not args.box and not args.point:
        raise UsageError("no mask given: pass --mask FIRST.png (for frame 0), --masks-dir DIR, or prompts "
                         "(--box X0,Y0,X1,Y1 / --point X,Y) for the prompt model")
    prompts = _parse_prompts(args)  # the syntax now; the ids once the masks are read

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # split between the engine's stages by rdevos.device.thread_plan
    source = open_frames(args.input)
    n_frames = source.num_frames
    masks = _parse_masks(args, source.names, n_frames) if args.mask or args.masks_dir else []
    if prompts and n_frames is not None and args.prompt_frame >= n_frames:
        raise UsageError(f"--prompt-frame {args.prompt_frame}: the video has {n_frames} frames")
    _check_output_folder(args, source, [f for _, f in masks])
    read = [(idx, f, validate_mask(f, source.size, name=f"mask {f}")) for idx, f in masks]
    _log_mask_objects(read)
    prompt_labels = None
    if prompts:
        in_masks = {i: f.name for _idx, f, lm in reversed(read) for i in lm.object_ids}
        prompts = _parse_prompts(args, max(in_masks, default=0) + 1, in_masks, source.size)
        from rdevos.prompt import prompts_to_labels

        prompt_labels = prompts_to_labels(_load_predictor(args), source.get(args.prompt_frame).image, prompts)
        for oid in prompts:
            area = int((prompt_labels == oid).sum())
            if not area:
                raise InputError(f"the prompt for object {oid} on frame {args.prompt_frame} gave an empty mask; "
                                 "draw the box around the object or click on it")
            logger.info("object %d from the prompt on frame %d: %d pixels", oid, args.prompt_frame, area)
    model = load_model(args.model, device=device)
    config = _inference_config(args, args.preset, args.precision or default_precision(device).value, model)
    if args.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    session = VideoSession(model, source, config, device=device)
    palette = None
    for idx, _f, lm in read:
        if palette is None:
            palette = lm.palette
        session.add_mask(idx, lm.labels)
    if prompt_labels is not None:
        session.add_mask(args.prompt_frame, prompt_labels, sorted(prompts))
    palette = palette or list(DAVIS_PALETTE)

    prompt_spec = [args.box, args.point, args.prompt_frame, args.prompt_model] if prompts else None
    sig = run_signature(source=str(Path(args.input).resolve()) if os.path.exists(args.input) else args.input,
                        annotations=session.annotations(), config=config, direction=args.direction,
                        extra={"model": args.model, "prompts": prompt_spec} if prompt_spec else args.model)
    try:
        res = segment_to_folder(session, out, signature=sig, direction=args.direction, palette=palette,
                                save_probs=args.save_probs, per_object=args.per_object, overwrite=args.overwrite,
                                info={"input": args.input, "settings": config.to_dict()},
                                progress=not args.no_progress)
    except RunFolderError as e:
        raise UsageError(f"-o {e}" + ("; --overwrite deletes that run's results (only the files it wrote), or write "
                                      "to another folder" if e.other_run else "")) from None
    except OSError as e:  # a full disk, an I/O error: the file it hit, and that nothing is lost
        if e.filename is None:
            raise
        raise RDEVOSError(f"{e.strerror or e}: {e.filename} (the results so far are kept: run the same command "
                          "again to resume)") from None
    restored = f"{', '.join(res.restored[:5])}{', ...' if len(res.restored) > 5 else ''}"
    if res.complete_already:
        logger.info("%s is complete already; nothing to do (use --overwrite to redo)", out)
    elif not res.ran:
        print(f"restored the missing outputs of {len(res.restored)} frame(s) of the finished run in {out}: {restored} "
              f"({res.frames} frames computed, the other outputs left as they are)")
    else:
        dt, n = res.seconds, res.frames
        mem = f"peak RSS {_peak_rss_mib():.0f} MiB"
        if device.type == "cuda":
            mem += f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
        how = f" (resumed the {res.resumed.direction.value} pass after frame {res.resumed.frame})" if res.resumed \
            else ""
        filled = f"; made the missing outputs of {len(res.restored)} earlier frame(s)" if res.restored else ""
        print(f"wrote {res.written} frames to {out} in {dt:.1f} s{how} ({n / max(dt, 1e-9):.2f} frames/s, "
              f"{mem}){filled}")

    if args.overlay or args.gif:
        _write_previews(args, source, out, palette)
    return EXIT_OK


def _check_output_folder(args: argparse.Namespace, source: object, masks: Sequence[Path]) -> None:
    """Before any work: -o must not hold this run's inputs, image files rdevos did not write, or a running run;
    --overlay/--gif must not be an input."""
    from rdevos.inference.runs import RunFolder, RunFolderError

    rf = RunFolder(args.output)
    try:
        rf.refuse_inputs(getattr(source, "files", None) or (), "input frame")
        rf.refuse_inputs(masks, "mask")
    except RunFolderError as e:
        raise UsageError(f"-o: {e}") from None
    if args.overwrite or rf.read_meta() is None:  # a new run (a resume may share its folder with other files)
        try:
            rf.refuse_foreign()
        except RunFolderError as e:
            raise UsageError(f"-o {e}") from None
    rf.refuse_busy()
    inputs = [Path(args.input), *masks] if os.path.isfile(args.input) else list(masks)
    for opt, target in (("--overlay", args.overlay), ("--gif", args.gif)):
        clash = next((f for f in inputs if target is not None and _same_file(target, f)), None)
        if clash is not None:
            raise UsageError(f"{opt} {target} is the input {clash}: writing it would replace it; give another name")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (also through a symlink, a relative path or a hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


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


# ---------------------------------------------------------------------------------------------------- prompts
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX_RE = re.compile(rf"^({_NUM}),({_NUM}),({_NUM}),({_NUM})(?:@(\d+))?$")
_POINT_RE = re.compile(rf"^({_NUM}),({_NUM})(?:,(pos|neg|\+|-|1|0))?(?:@(\d+))?$")


def _add_prompt_options(p: argparse.ArgumentParser, objects: bool) -> None:
    at = "[@ID]" if objects else ""
    p.add_argument("--box", action="append", default=[], metavar=f"X0,Y0,X1,Y1{at}",
                   help="box around an object in pixels (X1, Y1 exclusive; may reach past the frame); the prompt "
                        "model makes its mask"
                        + ("; repeatable, one object each (ids 1, 2, ... or, with --mask, the ids after the masks' "
                           "own; an @ID a mask holds is refused)" if objects else ""))
    p.add_argument("--point", action="append", default=[], metavar=f"X,Y[,neg]{at}",
                   help="click on an object (column X, row Y; ',neg' marks background); repeatable"
                        + ("; joins the box with the same @ID (default: the first object)" if objects else ""))
    p.add_argument("--prompt-model", metavar="MODEL",
                   help="prompt-to-mask model: checkpoint path, URL or name (default: the embedded one)")


def _parse_prompts(args: argparse.Namespace, default_id: int = 1, taken: Mapping[int, str] | None = None,
                   frame_size: tuple[int, int] | None = None) -> dict[int, Any]:
    """{object id: ObjectPrompt} from --box / --point; raises UsageError naming a malformed value.

    Boxes without @ID get ``default_id``, ``default_id + 1``, ... (with masks: the ids after theirs); an @ID in
    ``taken`` (object id -> the mask that holds it) is refused; with ``frame_size`` (H, W) a box or click off the
    frame is refused too.
    """
    from rdevos.prompt import ObjectPrompt, check_prompt

    def check(option: str, spec: str, oid: int, box: Any = None, point: tuple[float, float] | None = None) -> Any:
        """The box as the prompt model takes it (clipped to the frame, with a warning, when it reaches past it)."""
        if not 1 <= oid <= 255:
            raise UsageError(f"{option} {spec!r}: object ids are 1..255")
        if taken and oid in taken:
            raise UsageError(f"{option} {spec!r}: object {oid} is in mask {taken[oid]} already; a prompt makes a new "
                             f"object: leave @ID out (it gets the next free id) or give one the masks do not use")
        if frame_size is None:
            return box
        try:
            return check_prompt(frame_size[0], frame_size[1], box, [] if point is None else [(*point, True)])[0]
        except InputError as e:
            raise UsageError(f"{option} {spec!r}: {e}") from None

    prompts: dict[int, ObjectPrompt] = {}
    next_id = default_id
    for spec in args.box:
        m = _BOX_RE.match(spec.replace(" ", ""))
        if not m:
            raise UsageError(f"--box {spec!r}: expected X0,Y0,X1,Y1 (pixels) with an optional @ID")
        x0, y0, x1, y1 = (float(v) for v in m.groups()[:4])
        if not (x1 > x0 and y1 > y0):
            raise UsageError(f"--box {spec!r}: need X0 < X1 and Y0 < Y1")
        oid = int(m.group(5)) if m.group(5) else next_id
        box = check("--box", spec, oid, (x0, y0, x1, y1))
        if oid in prompts and prompts[oid].box is not None:
            raise UsageError(f"--box {spec!r}: object {oid} has a box already (give each object its own @ID)")
        prompts.setdefault(oid, ObjectPrompt()).box = box
        next_id = max(next_id, oid + 1)
    for spec in args.point:
        m = _POINT_RE.match(spec.replace(" ", ""))
        if not m:
            raise UsageError(f"--point {spec!r}: expected X,Y or X,Y,neg (pixels) with an optional @ID")
        x, y = float(m.group(1)), float(m.group(2))
        positive = m.group(3) not in ("neg", "-", "0")
        oid = int(m.group(4)) if m.group(4) else (min(prompts) if prompts else default_id)
        check("--point", spec, oid, point=(x, y))
        prompts.setdefault(oid, ObjectPrompt()).points.append((x, y, positive))
    for oid, pr in prompts.items():
        if pr.box is None and not any(p[2] for p in pr.points):
            raise UsageError(f"object {oid} has only negative clicks: give it a --box or a positive --point")
    return prompts


def _load_predictor(args: argparse.Namespace) -> Any:
    from rdevos.prompt import load_prompt_predictor

    return load_prompt_predictor(args.prompt_model, device=getattr(args, "device", None),
                                 precision=getattr(args, "precision", None))


def _add_mask(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "mask", _cmd_mask, help="make an object mask from a box and/or clicks on one image",
        description="Turn a box and/or clicks on one frame into a palette PNG mask with the prompt model (the "
                    "embedded one unless --prompt-model), e.g. the first-frame mask for 'rdevos segment'. "
                    "--add puts another object into an existing mask (the next free id unless --id).")
    p.add_argument("frame", help="the image (jpg/png/webp), or frame F of a video or frame folder: VIDEO[@F] "
                                 "(default frame 0), FOLDER@F")
    _add_prompt_options(p, objects=False)
    p.add_argument("--id", type=_int_at_least(1), default=None,
                   help="object id in the mask, 1..255 (default: 1; with --add the next id the mask does not use; "
                        "--add --id N with an N the mask holds replaces that object)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PNG", help="palette PNG to write")
    p.add_argument("--add", action="store_true", help="merge into the existing -o mask (other objects stay)")
    _add_device(p)
    _add_precision(p)


def _frame_spec(text: str) -> tuple[Path, int | None]:
    """``IMAGE``, ``VIDEO[@F]`` or ``FOLDER@F`` -> (path, frame index or None); raises UsageError."""
    path = Path(text)
    if path.exists() or "@" not in text:
        if path.is_dir():
            raise UsageError(f"{path} is a folder; give one frame image (e.g. {path / '00000.jpg'}) or one frame of "
                             f"the folder as {path}@F (e.g. {path}@0)")
        if not path.is_file():
            raise UsageError(f"image not found: {path}")
        return path, None
    head, idx = _split_at(text, text)
    if not Path(head).exists():
        raise UsageError(f"video or frame folder not found: {head}")
    return Path(head), idx


def _read_frame(path: Path, idx: int | None) -> Any:
    """The frame to prompt on: an image file (EXIF orientation applied), or frame ``idx`` of a video/folder."""
    from rdevos.io.frames import IMAGE_EXTENSIONS, open_frames, read_image

    if idx is None and path.suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path)
    source = open_frames(path)
    n = source.num_frames
    if n is not None and (idx or 0) >= n:
        raise UsageError(f"{path}@{idx}: the video has {n} frames (0..{n - 1})")
    return source.get(idx or 0).image


def _cmd_mask(args: argparse.Namespace) -> int:
    import numpy as np

    from rdevos.io.masks import DAVIS_PALETTE, read_mask, write_mask
    from rdevos.prompt import prompts_to_labels

    path, idx = _frame_spec(args.frame)
    if args.id is not None and args.id > 255:
        raise UsageError(f"--id {args.id}: object ids are 1..255")
    check_output_file(args.output, "-o/--output", (".png",))
    if _same_file(args.output, path):
        raise UsageError(f"-o {args.output} is the input image {path}: writing the mask would replace it; give "
                         "another file name")
    if path.is_dir() and _same_file(args.output.absolute().parent, path):
        raise UsageError(f"-o {args.output} lies in the input frame folder {path}: the mask would be read as a frame "
                         "(or replace one); write it elsewhere")
    check_device(args.device)
    if not args.box and not args.point:
        raise UsageError("no prompt given: pass --box X0,Y0,X1,Y1 and/or --point X,Y")
    spec = argparse.Namespace(box=args.box, point=args.point)
    if set(_parse_prompts(spec, args.id or 1)) != {args.id or 1}:
        raise UsageError(f"rdevos mask makes one object (--id {args.id or 1}); drop the @ID suffixes "
                         "(run it once per object with --add)")
    if args.add and not args.output.is_file():
        raise UsageError(f"--add: {args.output} does not exist yet (run once without --add)")
    image = _read_frame(path, idx)
    base, palette, held = None, list(DAVIS_PALETTE), []
    if args.add:
        lm = read_mask(args.output)
        base, palette, held = lm.labels, lm.palette or palette, lm.object_ids
    oid = args.id if args.id is not None else max(held, default=0) + 1
    if oid > 255:
        raise UsageError(f"--add: {args.output} holds object 255; give the new object a free id with --id")
    prompts = _parse_prompts(spec, oid, frame_size=image.shape[:2])
    labels = prompts_to_labels(_load_predictor(args), image, prompts, base)
    area = int((labels == oid).sum())
    if not area:
        raise InputError(f"the prompt gave an empty mask for object {oid}; draw the box around the object or click "
                         "on it")
    write_mask(args.output, labels.astype(np.uint8), palette)
    how = "replaced object" if oid in held else "object"
    kept = [i for i in held if i != oid]
    others = f"; object(s) {kept} kept" if kept else ""
    print(f"wrote {args.output}: {how} {oid}, {area} pixels ({100 * area / labels.size:.1f} % of the frame){others}")
    return EXIT_OK
