"""``python -m rdevos.train --config X.yaml [key=value ...]``, also under ``torchrun ... -m rdevos.train``.

Same as ``rdevos train``; the arguments are parsed by :mod:`rdevos.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from rdevos.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
