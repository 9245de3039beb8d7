"""Access to the bundled sample clip (25 frames of DAVIS-2016 ``bear``, 480x270, CC BY-NC 4.0).

Regenerate it with ``scripts/make_sample.py``; see ``assets/sample/LICENSE.md`` for attribution.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from rdevos.errors import RDEVOSError

__all__ = ["sample_dir", "sample_clip_dir", "sample_mask_path"]

logger = logging.getLogger(__name__)


def sample_dir() -> Path:
    """Folder of the bundled sample (``frames/``, ``first_mask.png``, ``LICENSE.md``).

    Returns:
        Filesystem path of ``rdevos/assets/sample``.

    Raises:
        RDEVOSError: the package data is missing or not on the filesystem (e.g. zipped install).
    """
    res = files("rdevos") / "assets" / "sample"
    path = Path(str(res))
    if not path.is_dir():
        raise RDEVOSError(
            f"the bundled sample clip is missing ({res}); reinstall rdevos with its package data "
            "or regenerate it with scripts/make_sample.py"
        )
    return path


def sample_clip_dir() -> Path:
    """Folder of the sample frames ``00000.jpg ... 00024.jpg`` (pass it to ``open_frames``).

    Returns:
        Filesystem path of ``rdevos/assets/sample/frames``.
    """
    return sample_dir() / "frames"


def sample_mask_path() -> Path:
    """Path of the frame-0 annotation: palette PNG, 480x270, label 1 = bear.

    Returns:
        Filesystem path of ``rdevos/assets/sample/first_mask.png``.
    """
    return sample_dir() / "first_mask.png"
