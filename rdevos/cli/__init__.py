"""Command line: ``rdevos segment | mask | eval | run-dataset | export | train | bench | models | serve``.

The only argparse in the package, one module per group of commands (``segment``: segment and mask;
``datasets``: eval and run-dataset; ``tools``: bench, train, serve, export, models); shared flags and checks live
in ``_common``. Errors are one line, ``rdevos: error: <what is wrong>``, never a traceback
(``--debug`` shows it): exit status 2 for a bad option (malformed or out-of-range values, paths that do not exist
or cannot be written, a device this machine lacks; all checked before any work starts), 1 for a failure while
working (unreadable frames or masks, a model that does not load, a missing optional package).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rdevos.cli._common import (EXIT_ERROR, EXIT_OK, EXIT_USAGE, PRESETS, _Parser, _setup_logging, check_device,
                                check_input_dir, check_input_file, check_output_dir, check_output_file)
from rdevos.cli.datasets import _add_eval, _add_run_dataset
from rdevos.cli.segment import _add_mask, _add_segment
from rdevos.cli.tools import PLUGIN_GROUP, _add_bench, _add_export, _add_models, _add_serve, _add_train, _plugin
from rdevos.errors import UsageError

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "PRESETS", "PLUGIN_GROUP",
           "check_device", "check_input_dir", "check_input_file", "check_output_dir", "check_output_file", "_plugin"]


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

