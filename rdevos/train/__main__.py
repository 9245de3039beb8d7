"""``python -m rdevos.train --config X.yaml [key=value ...]`` (also under ``torchrun ... -m rdevos.train``).

The ``rdevos train`` CLI subcommand calls :func:`main` / :func:`rdevos.train.run_training` the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from rdevos.errors import RDEVOSError
    from rdevos.train import TrainConfig, run_training

    parser = argparse.ArgumentParser(prog="python -m rdevos.train", description="Train RDE-VOS (all stages of a "
                                     "config, resumable; works under torchrun).")
    parser.add_argument("--config", required=True, help="YAML preset, e.g. configs/lite-davis.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. stages.0.iterations=100 precision=fp32")
    parser.add_argument("--no-resume", action="store_true", help="start fresh (refused if output_dir has checkpoints)")
    parser.add_argument("--resume-from", default=None, help="resume from this training checkpoint file")
    parser.add_argument("--max-iterations", type=int, default=None,
                        help="stop after this many iterations in this call (a resumable checkpoint is written)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    rank = int(os.environ.get("RANK", "0") or 0)
    level = logging.DEBUG if args.verbose else logging.WARNING if (args.quiet or rank != 0) else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        config = TrainConfig.from_yaml(args.config, args.overrides)
        resume: bool | str = args.resume_from if args.resume_from else not args.no_resume
        path = run_training(config, resume=resume, progress=not args.no_progress,
                            max_iterations=args.max_iterations)
    except RDEVOSError as e:
        logging.getLogger("rdevos.train").error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130
    if rank == 0:
        print(path)  # noqa: T201 (the CLI's result on stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
