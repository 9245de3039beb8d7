"""Command line: ``rdevos segment | mask | eval | run-dataset | export | train | bench | models | serve``.

The only argparse in the package. Errors are one line, ``rdevos: error: <what is wrong>``, never a traceback
(``--debug`` shows it): exit status 2 for a bad option (malformed or out-of-range values, paths that do not exist
or cannot be written, a device this machine lacks; all checked before any work starts), 1 for a failure while
working (unreadable frames or masks, a model that does not load, a missing optional package).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rdevos.errors import UsageError

if TYPE_CHECKING:
    from rdevos.config import InferenceConfig
    from rdevos.model.network import RDEVOS

logger = logging.getLogger("rdevos")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PRESETS = ("modelscope", "davis2017", "davis2016", "youtubevos")
_PRESET_HELP = ("inference settings: modelscope (short side 480, top-k 20, memory every 4th frame), davis2017/"
                "davis2016 (native size, top-k 40, every 3rd), youtubevos (short side 480, top-k 20, 4 frames "
                "after the last memory frame)")
_TOP_K_HELP = "memory entries each query pixel reads (top-k of the affinity; default: preset)"
_MEM_EVERY_HELP = "add a frame to the memory every N frames (default: preset)"
_RESOLUTION_HELP = "short side to resize the frames to (>= 16), or 'native' (default: model's, else preset)"
_DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
_NO_PROGRESS_HELP = "no progress bar"
_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi")


# ---------------------------------------------------------------------------------------------------- checks
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rdevos: error: ... (see 'rdevos segment --help')``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"rdevos: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` only where the help does not already say the default and there is one to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        return text + " (default: %(default)s)"


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {value}")
    return value


def _resolution(text: str) -> int | str:
    """'native' or a short side >= 16."""
    if text == "native":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'native' or a short side in pixels (>= 16), got {text!r}") from None
    if value < 16:
        raise argparse.ArgumentTypeError(f"must be 'native' or a short side in pixels (>= 16), got {value}")
    return value


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(text: str) -> str:
    if not _DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: choose auto, cpu, cuda, cuda:N or mps")
    return text


def _csv_of(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """Type for comma-separated values, each checked by ``item``."""

    def parse(text: str) -> list[Any]:
        parts = [x.strip() for x in text.split(",") if x.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"needs at least one {what}, got {text!r}")
        out = []
        for x in parts:
            try:
                out.append(item(x))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"{x!r}: {e}") from None
        return out

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"unknown value {text!r}: choose from {', '.join(allowed)}")
        return text

    return parse


def _objects_spec(text: str) -> int | str:
    if text == "dynamic":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'dynamic', got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    try:
        rank, world = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like I/N (shard I of N, 0 <= I < N), got {text!r}") from None
    if not 0 <= rank < world:
        raise argparse.ArgumentTypeError(f"must look like I/N with 0 <= I < N, got {text!r}")
    return rank, world


def _writable_ancestor(path: Path, option: str, target: Path) -> None:
    """The nearest existing folder above ``path`` (or ``path`` itself) must be a writable folder."""
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{option} {target}: {anc} is a file, so no folder can be made under it")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {target}: cannot write into {anc} (permission denied)")


def check_output_dir(path: Path, option: str) -> None:
    """An output folder: missing (it will be made) or an existing writable folder, never a file."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is an existing file; give a folder (it is created if missing)")
    _writable_ancestor(path, option, path)


def check_output_file(path: Path, option: str, suffixes: Sequence[str] = ()) -> None:
    """An output file that can be written: not a folder, the wanted suffix, a writable folder above it."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name"
                         + (f" ending in {suffixes[0]}, e.g. {path / ('out' + suffixes[0])}" if suffixes else ""))
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: the file name must end in {', '.join(suffixes)}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path} exists and cannot be overwritten (permission denied)")
    _writable_ancestor(path.parent, option, path)


def check_input_dir(path: Path, option: str) -> None:
    if not path.exists():
        raise UsageError(f"{option} {path} does not exist")
    if not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")


def check_input_file(path: Path, option: str) -> None:
    if not path.exists():
        raise UsageError(f"{option} {path} does not exist")
    if not path.is_file():
        raise UsageError(f"{option} {path} is a folder, not a file")


def check_device(spec: str, option: str = "--device") -> None:
    """Refuse a device this machine does not have (CUDA without CUDA, cuda:N past the last GPU, MPS)."""
    import torch

    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support (a CPU build)" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UsageError(f"{option} {spec}: CUDA is not available: {why}; use --device cpu or auto")
        if ":" in spec and int(spec.split(":")[1]) >= torch.cuda.device_count():
            raise UsageError(f"{option} {spec}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"{option} mps: Apple MPS is not available on this machine; use --device cpu or auto")


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
                      ) -> InferenceConfig:  # --resolution/--top-k/--mem-every were checked by argparse
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
                    "into OUT as each frame is done; re-running into OUT resumes. Masks may be palette, greyscale "
                    "or colour PNGs (black = background; DAVIS palette colours keep their index, other colours "
                    "are numbered by first appearance, row by row).",
        formatter_class=_HelpFormatter)
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
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--device", type=_device, default="auto", help=_DEVICE_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="default: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32")
    p.add_argument("--preset", default="modelscope", choices=PRESETS, help=_PRESET_HELP)
    p.add_argument("--resolution", type=_resolution, default=None, help=_RESOLUTION_HELP)
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help=_TOP_K_HELP)
    p.add_argument("--mem-every", type=_positive_int, default=None, metavar="N", help=_MEM_EVERY_HELP)
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="forward",
                   help="forward from the first mask to the end, backward from the last mask to frame 0, or both "
                        "(forward, then backward from the first mask)")
    p.add_argument("--overlay", type=Path, metavar="MP4", help="write an H.264 mp4 with coloured masks over the frames")
    p.add_argument("--gif", type=Path, help="write a small animated GIF preview")
    p.add_argument("--save-probs", action="store_true", help="also store soft masks (OUT/probs/*.npz)")
    p.add_argument("--per-object", action="store_true", help="also write OUT/objects/<id>/<frame>.png (0/255)")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster frames)")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)
    p.set_defaults(func=_cmd_segment)


_MASKS_DIR_EXPECTS = "PNG masks named like the frames (e.g. 00000.png for frame 00000.jpg) or by frame index"


def _parse_masks(args: argparse.Namespace, names: list[str] | None) -> list[tuple[int, Path]]:
    """(frame index, file) of every --mask and --masks-dir mask, sorted; raises UsageError naming the problem."""
    out: list[tuple[int, Path]] = []
    for spec in args.mask:
        path, _, frame = spec.rpartition("@") if "@" in spec else (spec, "", "0")
        try:
            idx = int(frame)
        except ValueError:
            raise UsageError(f"--mask {spec!r}: the part after '@' must be a frame index") from None
        if idx < 0:
            raise UsageError(f"--mask {spec!r}: the frame index must be >= 0")
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


def _signature(args: argparse.Namespace, masks: list[tuple[int, Path]], config: object) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(Path(args.input).resolve()) if os.path.exists(args.input) else args.input,
                         args.model, args.direction, repr(config)]).encode())
    if getattr(args, "box", None) or getattr(args, "point", None):
        h.update(json.dumps([args.box, args.point, args.prompt_frame, args.prompt_model]).encode())
    for idx, f in masks:
        h.update(str(idx).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _cmd_segment(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from rdevos.device import default_precision, resolve_device
    from rdevos.hub import load_model
    from rdevos.inference.session import Direction, VideoSession
    from rdevos.io.frames import open_frames
    from rdevos.io.masks import (DAVIS_PALETTE, atomic_write, fit_mask_to_frame, read_mask, write_mask,
                                 write_object_masks, write_probabilities)

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
    prompts = _parse_prompts(args)

    device = resolve_device(args.device)
    source = open_frames(args.input)
    masks = _parse_masks(args, source.names) if args.mask or args.masks_dir else []
    read = [(idx, f, fit_mask_to_frame(read_mask(f), source.size, name=f"mask {f}")) for idx, f in masks]
    _log_mask_objects(read)
    prompt_labels = None
    if prompts:
        n_frames = source.num_frames
        if n_frames is not None and args.prompt_frame >= n_frames:
            raise UsageError(f"--prompt-frame {args.prompt_frame}: the video has {n_frames} frames")
        from rdevos.prompt import prompts_to_labels

        prompt_labels = prompts_to_labels(_load_predictor(args), source.get(args.prompt_frame).image, prompts)
        for oid in prompts:
            logger.info("object %d from the prompt on frame %d: %d pixels", oid, args.prompt_frame,
                        int((prompt_labels == oid).sum()))
    state_file = out / ".rdevos-resume.pt"
    meta_file = out / ".rdevos-run.json"
    if not args.overwrite and not meta_file.exists() and out.is_dir() and any(out.glob("*.png")):
        raise UsageError(f"-o {out} already holds PNG files from another tool; use --overwrite or another folder")

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

    out.mkdir(parents=True, exist_ok=True)
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
            raise UsageError(f"-o {out} holds results of a different run (other input, masks, model or settings); "
                             "use --overwrite to replace them or choose another folder")
        done = bool(meta.get("complete"))
        if done:
            logger.info("%s is complete already; nothing to do (use --overwrite to redo)", out)
        elif state_file.exists():
            st = torch.load(state_file, map_location="cpu", weights_only=True)
            resume = (st["direction"], int(st["frame"]), st["state"])
            logger.info("resuming the %s pass after frame %d", st["direction"], st["frame"])

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
        print(f"wrote {n} masks to {out} in {dt:.1f} s ({n / max(dt, 1e-9):.2f} frames/s, {mem})")

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


# ---------------------------------------------------------------------------------------------------- prompts
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX_RE = re.compile(rf"^({_NUM}),({_NUM}),({_NUM}),({_NUM})(?:@(\d+))?$")
_POINT_RE = re.compile(rf"^({_NUM}),({_NUM})(?:,(pos|neg|\+|-|1|0))?(?:@(\d+))?$")


def _add_prompt_options(p: argparse.ArgumentParser, objects: bool) -> None:
    at = "[@ID]" if objects else ""
    p.add_argument("--box", action="append", default=[], metavar=f"X0,Y0,X1,Y1{at}",
                   help="box around an object in pixels (X1, Y1 exclusive); the prompt model makes its mask"
                        + ("; repeatable, one object each (ids 1, 2, ... unless @ID)" if objects else ""))
    p.add_argument("--point", action="append", default=[], metavar=f"X,Y[,neg]{at}",
                   help="click on an object (column X, row Y; ',neg' marks background); repeatable"
                        + ("; joins the box with the same @ID (default: the first object)" if objects else ""))
    p.add_argument("--prompt-model", metavar="MODEL",
                   help="prompt-to-mask model: checkpoint path, URL or name (default: the embedded one)")


def _parse_prompts(args: argparse.Namespace, default_id: int = 1) -> dict[int, Any]:
    """{object id: ObjectPrompt} from --box / --point; raises UsageError naming a malformed value."""
    from rdevos.prompt import ObjectPrompt

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
        if not 1 <= oid <= 255:
            raise UsageError(f"--box {spec!r}: object ids are 1..255")
        if oid in prompts and prompts[oid].box is not None:
            raise UsageError(f"--box {spec!r}: object {oid} has a box already (give each object its own @ID)")
        prompts.setdefault(oid, ObjectPrompt()).box = (x0, y0, x1, y1)
        next_id = max(next_id, oid + 1)
    for spec in args.point:
        m = _POINT_RE.match(spec.replace(" ", ""))
        if not m:
            raise UsageError(f"--point {spec!r}: expected X,Y or X,Y,neg (pixels) with an optional @ID")
        x, y = float(m.group(1)), float(m.group(2))
        positive = m.group(3) not in ("neg", "-", "0")
        oid = int(m.group(4)) if m.group(4) else (min(prompts) if prompts else default_id)
        if not 1 <= oid <= 255:
            raise UsageError(f"--point {spec!r}: object ids are 1..255")
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
    p = sub.add_parser(
        "mask", parents=[_COMMON], help="make an object mask from a box and/or clicks on one image",
        description="Turn a box and/or clicks on one frame into a palette PNG mask with the prompt model (the "
                    "embedded one unless --prompt-model), e.g. the first-frame mask for 'rdevos segment'. "
                    "--add puts the object into an existing mask instead of starting a new one.",
        formatter_class=_HelpFormatter)
    p.add_argument("frame", type=Path, help="the image (jpg/png/webp)")
    _add_prompt_options(p, objects=False)
    p.add_argument("--id", type=_int_at_least(1), default=1, help="object id in the mask (1..255)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PNG", help="palette PNG to write")
    p.add_argument("--add", action="store_true", help="merge into the existing -o mask (other objects stay)")
    p.add_argument("--device", type=_device, default="auto", help=_DEVICE_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="default: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32")
    p.set_defaults(func=_cmd_mask)


def _cmd_mask(args: argparse.Namespace) -> int:
    import numpy as np

    from PIL import Image, UnidentifiedImageError

    from rdevos.errors import InputError
    from rdevos.io.frames import to_rgb_array
    from rdevos.io.masks import DAVIS_PALETTE, read_mask, write_mask
    from rdevos.prompt import prompts_to_labels

    if not args.frame.is_file():
        raise UsageError(f"image not found: {args.frame}")
    if args.id > 255:
        raise UsageError(f"--id {args.id}: object ids are 1..255")
    check_output_file(args.output, "-o/--output", (".png",))
    check_device(args.device)
    if not args.box and not args.point:
        raise UsageError("no prompt given: pass --box X0,Y0,X1,Y1 and/or --point X,Y")
    prompts = _parse_prompts(argparse.Namespace(box=args.box, point=args.point), args.id)
    if set(prompts) != {args.id}:
        raise UsageError(f"rdevos mask makes one object (--id {args.id}); drop the @ID suffixes "
                         "(run it once per object with --add)")
    if args.add and not args.output.is_file():
        raise UsageError(f"--add: {args.output} does not exist yet (run once without --add)")
    try:
        with Image.open(args.frame) as im:
            image = to_rgb_array(im, what=str(args.frame))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image {args.frame}: {e}") from None
    base, palette = None, list(DAVIS_PALETTE)
    if args.add:
        lm = read_mask(args.output)
        base, palette = lm.labels, lm.palette or palette
    labels = prompts_to_labels(_load_predictor(args), image, prompts, base)
    area = int((labels == args.id).sum())
    write_mask(args.output, labels.astype(np.uint8), palette)
    print(f"wrote {args.output}: object {args.id}, {area} pixels ({100 * area / labels.size:.1f} % of the frame)")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", parents=[_COMMON], help="DAVIS J&F of predicted masks (official-toolkit numbers)",
                       description="Compute J (region IoU) and F (boundary F-measure) exactly as the official "
                                   "davis2017-evaluation code (semi-supervised), write its CSV files (3 decimals) "
                                   "and results.json (global, per-sequence, per-object and per-frame numbers at "
                                   "full precision).", formatter_class=_HelpFormatter)
    p.add_argument("--gt", type=Path, required=True, help="annotations folder (<seq>/<frame>.png)")
    p.add_argument("--pred", type=Path, required=True, help="predictions folder (<seq>/<frame>.png)")
    p.add_argument("--sequences", nargs="*", help="only these sequences (default: all in --gt)")
    p.add_argument("-o", "--output", type=Path, help="where to write the CSVs and results.json (default: --pred)")
    p.add_argument("--split", default="val", help="DAVIS set name used in the CSV file names")
    p.add_argument("--processes", type=_positive_int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of the table")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)
    p.set_defaults(func=_cmd_eval)


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
def _add_run_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run-dataset", parents=[_COMMON], help="segment every sequence of a dataset (resumable, shardable)",
        description="Segment a DAVIS / YouTube-VOS / generic dataset into OUT/<seq>/<frame>.png with the dataset's "
                    "official preset. Finished sequences are skipped on re-runs. Under torchrun (or with --shard "
                    "I/N) each process takes a deterministic share of the sequences.",
        formatter_class=_HelpFormatter)
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
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--sequences", nargs="*", help="only these sequences")
    p.add_argument("--device", type=_device, default="auto", help=_DEVICE_HELP)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="fp32 reproduces the reference numerics")
    p.add_argument("--resolution", type=_resolution, default=None,
                   help="override the preset's short side (>= 16), or 'native'")
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help=_TOP_K_HELP)
    p.add_argument("--mem-every", type=_positive_int, default=None, metavar="N", help=_MEM_EVERY_HELP)
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="run shard I of N (default: RANK/WORLD_SIZE)")
    p.add_argument("--all-frames-root", type=Path, default=None,
                   help="YouTube-VOS: every frame (valid_all_frames); default: found next to the split")
    p.add_argument("--no-all-frames", action="store_true", help="YouTube-VOS: segment the required frames only")
    p.add_argument("--eval", action="store_true",
                   help="score the predictions (DAVIS J&F, CSVs and results.json in OUT) when all are done")
    p.add_argument("--zip", type=Path, help="write a submission zip when all sequences are done")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)
    p.set_defaults(func=_cmd_run_dataset)


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
        from rdevos.eval import evaluate_davis, format_table, write_official_csvs, write_results_json

        res = evaluate_davis(find_layout(args.root, ds, args.split).annotations, args.output, seqs)
        paths = [*write_official_csvs(res, args.output, split=args.split),
                 write_results_json(res, args.output, split=args.split)]
        print(format_table(res))
        print("wrote " + ", ".join(str(p) for p in paths))
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
        formatter_class=_HelpFormatter)
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
    p.add_argument("--model", help="checkpoint, ModelScope dir/id, URL or name (default: random official weights)")
    p.add_argument("--top-k", type=_positive_int, default=40, metavar="K", help="memory entries each query pixel reads")
    p.add_argument("--mem-every", type=_positive_int, default=3, metavar="N",
                   help="add a frame to the memory every N frames")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed warm-up frames before each timed video")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default: torch's, see OMP_NUM_THREADS)")
    p.add_argument("--reference", action="store_true", help="also measure the reference implementation")
    p.add_argument("--max-reference-length", type=_positive_int, default=400,
                   help="longest video for the O(T) reference")
    p.add_argument("--timeout", type=_positive_float, default=None, help="seconds per configuration")
    p.add_argument("-o", "--output", type=Path, help="write the results as JSON")
    p.add_argument("--plot", type=Path, help="PNG of s/frame and peak memory against length (needs rdevos[bench])")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)
    p.set_defaults(func=_cmd_bench)


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
    report = bench.run_bench(
        resolutions=args.resolutions, lengths=args.lengths, precisions=args.precision, devices=args.device,
        objects=args.objects, model=args.model, reference=args.reference, top_k=args.top_k,
        mem_every=args.mem_every, warmup=args.warmup, threads=args.threads,
        max_reference_length=args.max_reference_length, timeout=args.timeout, progress=not args.no_progress)
    print(bench.format_bench_table(report))
    if args.output:
        print(f"wrote {report.write_json(args.output)}")
    if args.plot:
        print(f"wrote {bench.plot_report(report, args.plot)}")
    return EXIT_OK if all(r.error is None for r in report.rows) else EXIT_ERROR


# ---------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", parents=[_COMMON],
                       help="train a model (all stages of a YAML config; resumable; works under torchrun)",
                       description="Train RDE-VOS. Presets live in configs/*.yaml; override fields with dotted "
                                   "KEY=VALUE pairs. Several processes/GPUs: torchrun --nproc_per_node N -m "
                                   "rdevos.train --config X.yaml.", formatter_class=_HelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="YAML preset, e.g. configs/lite-davis.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. stages.0.iterations=100 precision=fp32")
    p.add_argument("--no-resume", action="store_true", help="start fresh (refused if output_dir has checkpoints)")
    p.add_argument("--resume-from", type=Path, default=None, help="resume from this training checkpoint file")
    p.add_argument("--max-iterations", type=_positive_int, default=None,
                   help="stop after this many iterations in this call (a resumable checkpoint is written)")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)
    p.set_defaults(func=_cmd_train)


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
    p = sub.add_parser(
        "serve", parents=[_COMMON], help="web app: segment a video in the browser (needs rdevos[web])",
        description="Start the web app (Gradio). Upload a video or frames, draw objects, run in the background, "
                    "fix frames, download masks and an overlay video. Jobs and results live in --work-dir; a run "
                    "goes on when the page is closed and a restarted server lists (and continues) earlier jobs.",
        formatter_class=_HelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything else than this machine gets "
                                                       "access without login")
    p.add_argument("--port", type=_port, default=7860, help="port to listen on")
    p.add_argument("--work-dir", type=Path, default=Path("rdevos-work"), help="folder for jobs, uploads and results")
    p.add_argument("--model", help="default checkpoint, ModelScope dir/id, URL or name (default: embedded model)")
    p.add_argument("--device", type=_device, default="auto", help=_DEVICE_HELP)
    p.add_argument("--resolution", default="480", help="short side new jobs resize to (>= 16), or 'native'")
    p.add_argument("--max-upload-mb", type=_positive_float, default=500.0, help="largest upload accepted (MiB)")
    p.add_argument("--max-frames", type=_positive_int, default=10000, help="most frames per video")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--prompt-model", help="box/click-to-mask model of the editor (default: embedded model)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from rdevos.errors import InputError, RDEVOSError

    if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("rdevos_web") is None:
        raise RDEVOSError("the web app needs the optional 'web' extra: pip install 'rdevos[web]'")
    from rdevos_web import ServeOptions, serve
    from rdevos_web.jobs import RunSettings

    if args.resolution != "native" and not (args.resolution.isdigit() and int(args.resolution) >= 16):
        # exit status 1, not 2: tests/web/test_serve_cli.py pins it
        raise InputError(f"--resolution must be 'native' or a number >= 16, got {args.resolution!r}")
    check_output_dir(args.work_dir, "--work-dir")
    check_device(args.device)
    settings = RunSettings(model=args.model, device=args.device,
                           resolution=None if args.resolution == "native" else int(args.resolution))
    serve(ServeOptions(work_dir=args.work_dir, host=args.host, port=args.port, settings=settings,
                       max_upload_mb=args.max_upload_mb, max_frames=args.max_frames, open_browser=args.open,
                       prompt_model=args.prompt_model))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", parents=[_COMMON], help="export the per-frame graphs to ONNX or TorchScript",
        description="Write the key encoder, value encoder, segment (memory read + decoder) and compress (RDE "
                    "update) graphs with dynamic frame size, and manifest.json with the settings and "
                    "preprocessing. Run an ONNX export without torch: rdevos.export.OnnxEngine(OUT) "
                    "(pip install 'rdevos[export]').",
        formatter_class=_HelpFormatter)
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True, help="graph format")
    p.add_argument("--model", required=True, help="checkpoint, ModelScope dir/id, URL or name")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="weights and activations")
    p.add_argument("--objects", type=_objects_spec, default="dynamic",
                   help="a fixed number of objects K in the graphs' shapes, or 'dynamic' (any number)")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--preset", default="modelscope", choices=PRESETS,
                   help="inference settings recorded in the manifest: " + _PRESET_HELP.split(": ", 1)[1])
    p.add_argument("--resolution", type=_resolution, default=None, help=_RESOLUTION_HELP)
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help=_TOP_K_HELP)
    p.add_argument("--mem-every", type=_positive_int, default=None, metavar="N", help=_MEM_EVERY_HELP)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from rdevos.export import export_model
    from rdevos.hub import load_model

    if args.opset is not None and args.format != "onnx":
        raise UsageError(f"--opset is for ONNX exports only (got --format {args.format})")
    check_output_dir(args.output, "-o/--output")
    model = load_model(args.model, device="cpu")
    config = _inference_config(args, args.preset, args.precision, model)
    manifest = export_model(model, args.output, format=args.format, config=config, precision=args.precision,
                            objects=args.objects, opset=args.opset)
    print(f"wrote {args.format} export ({args.precision}, objects {args.objects}) to {manifest.parent}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", parents=[_COMMON], help="list named models (the default is marked)",
                       formatter_class=_HelpFormatter)
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from rdevos.hub.registry import DEFAULT_MODEL, REGISTRY

    for name, spec in sorted(REGISTRY.items()):
        mark = " (default: used when no --model / model= is given)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}\n    {spec.description} [{spec.license}]")
    return EXIT_OK


def _common_parser() -> argparse.ArgumentParser:
    # -v/-q/--debug work before or after the subcommand; SUPPRESS keeps a subcommand from resetting the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (-vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings only")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of the one-line message")
    return common


_COMMON = _common_parser()


def build_parser() -> argparse.ArgumentParser:
    from rdevos import __version__

    parser = _Parser(prog="rdevos", description="RDE-VOS video object segmentation.",
                     epilog="Errors are one line; exit status 2 for a bad option, 1 for a failure while working. "
                            "--debug shows the traceback.")
    parser.add_argument("--version", action="version", version=f"rdevos {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of the one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_segment(sub)
    _add_mask(sub)
    _add_eval(sub)
    _add_run_dataset(sub)
    _add_export(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_models(sub)
    _add_serve(sub)
    return parser


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error while working, 2 bad option, 130 interrupted)."""
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
    except (RDEVOSError, OSError) as e:
        if args.debug:
            raise
        print(f"rdevos: error: {_error_line(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("rdevos: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
