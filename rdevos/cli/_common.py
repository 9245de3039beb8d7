"""Shared pieces of the CLI: argparse types and checks, shared flags, logging, the inference settings."""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import sys
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
                "after the last memory frame). A named preset replaces the model's own settings; --resolution, "
                "--top-k and --mem-every override both (default: the model's own settings, for the embedded model "
                "short side 540, top-k 20, every 10th frame; for a checkpoint without settings, modelscope)")
_TOP_K_HELP = "memory entries each query pixel reads (top-k of the affinity; default: the preset's, else the model's)"
_MEM_EVERY_HELP = "add a frame to the memory every N frames (default: the preset's, else the model's)"
_RESOLUTION_HELP = ("short side to resize the frames to (>= 16), or 'native' (default: the preset's, else the "
                    "model's)")
_DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
_NO_PROGRESS_HELP = "no progress bar"
_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi")



# ---------------------------------------------------------------------------------------------------- checks
#: Options whose values may start with a minus sign (``--box -50,-20,100,80``: a box reaching past the left edge).
_SIGNED_VALUE_OPTIONS = ("--box", "--point")
_SIGNED_VALUE = re.compile(r"^-(\d|\.\d)")


def _join_signed_values(args: Sequence[str]) -> list[str]:
    """``--box -50,...`` -> ``--box=-50,...``: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    it = iter(args)
    for a in it:
        if a in _SIGNED_VALUE_OPTIONS:
            nxt = next(it, None)
            if nxt is not None and _SIGNED_VALUE.match(nxt):
                out.append(f"{a}={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rdevos: error: ... (see 'rdevos segment --help')``, exit status 2."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(_join_signed_values(sys.argv[1:] if args is None else args), namespace)

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
    # os.access says yes to root everywhere, and knows nothing of read-only mounts or /proc: try it.
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=anc, prefix=".rdevos-write-check-")
    except OSError as e:
        raise UsageError(f"{option} {target}: cannot write into {anc}: creating a file there fails "
                         f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


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


def _inference_config(args: argparse.Namespace, preset: str | None, precision: str, model: RDEVOS | None = None
                      ) -> InferenceConfig:  # --resolution/--top-k/--mem-every were checked by argparse
    """:meth:`InferenceConfig.for_model`'s rule: the command line's --resolution/--top-k/--mem-every and the
    precision, then the named ``preset`` (``None``: none named), then the model's own inference defaults."""
    from rdevos.config import InferenceConfig, Precision

    defaults = model.inference_defaults if model is not None else None
    changes: dict[str, object] = {"precision": Precision(precision)}
    if args.resolution is not None:
        changes["resolution"] = None if args.resolution == "native" else int(args.resolution)
    if args.top_k is not None:
        changes["top_k"] = args.top_k
    if args.mem_every is not None:
        changes["mem_every"] = args.mem_every
    if getattr(args, "flip", False):
        changes["flip"] = True
    return InferenceConfig.for_model(defaults, preset, **changes)


# ---------------------------------------------------------------------------------------------------- shared flags
_PRECISION_AUTO_HELP = "default: fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32"


_MODEL_HELP = "checkpoint, ModelScope dir/id, URL or name"


def _add_model(p: argparse.ArgumentParser, default: str | None = "embedded model", *, what: str = "") -> None:
    """--model: what load_model takes; ``default`` says what is used without it (``None``: --model is required),
    ``what`` is put before the usual words (e.g. ``"default "`` for the jobs' default model)."""
    tail = f" (default: {default})" if default else ""
    p.add_argument("--model", required=default is None, help=f"{what}{_MODEL_HELP}{tail}")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device, default="auto", help=_DEVICE_HELP)


def _add_precision(p: argparse.ArgumentParser, default: str | None = None, help: str = _PRECISION_AUTO_HELP,
                   choices: Sequence[str] = ("fp32", "bf16", "fp16")) -> None:
    p.add_argument("--precision", choices=list(choices), default=default, help=help)


def _add_memory_options(p: argparse.ArgumentParser, resolution_help: str = _RESOLUTION_HELP) -> None:
    """--resolution, --top-k, --mem-every: what _inference_config maps onto InferenceConfig."""
    p.add_argument("--resolution", type=_resolution, default=None, help=resolution_help)
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help=_TOP_K_HELP)
    p.add_argument("--mem-every", type=_positive_int, default=None, metavar="N", help=_MEM_EVERY_HELP)


def _add_flip(p: argparse.ArgumentParser) -> None:
    """--flip: InferenceConfig.flip (horizontal-flip test-time averaging)."""
    p.add_argument("--flip", action="store_true",
                   help="horizontal-flip test-time averaging: a second engine segments the mirrored video and the "
                        "probabilities are averaged (about 1.9x the CPU time a frame; docs/MODEL_CARD.md)")


def _add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS_HELP)


def _common_parser() -> argparse.ArgumentParser:
    # -v/-q/--debug work before or after the subcommand; SUPPRESS keeps a subcommand from resetting the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (-vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings only")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of the one-line message")
    return common


_COMMON = _common_parser()


def _command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], *, help: str,
             description: str | None = None) -> argparse.ArgumentParser:
    """The subcommand ``name``, run by ``func(args)`` (its exit status), with the flags every command has
    (-v/-q/--debug) and the help formatter of all of them; ``help`` is its line in ``rdevos --help``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[_COMMON], formatter_class=_HelpFormatter,
                                                     help=help, description=description)
    parser.set_defaults(func=func)
    return parser
