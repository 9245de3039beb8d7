"""``rdevos`` CLI whose job runs the browser tests can slow down and hold.

Every result frame is held back DELAY seconds, and while the file ``WORK/.test-hold`` exists and holds a number N, a
run stops before writing more than N result files of its job, until the file is removed. The tests use it to
watch progress and press Cancel mid-run without racing the run.

Usage: python _slow_server.py DELAY serve --work-dir WORK ARGS...
"""

from __future__ import annotations

import sys
import time

import numpy as np

from rdevos_web.jobs import Job, JobManager

DELAY = 0.0
_write = JobManager._write_result


def _slow_write(self: JobManager, job: Job, name: str, labels: np.ndarray) -> None:
    hold = self.work.root / ".test-hold"
    while hold.exists():
        try:
            limit = int(hold.read_text() or 0)
        except (OSError, ValueError):
            limit = 0
        if len(list(job.masks_dir.glob("*.png"))) < limit:
            break
        time.sleep(0.05)
    time.sleep(DELAY)
    _write(self, job, name, labels)


if __name__ == "__main__":
    DELAY = float(sys.argv[1])
    JobManager._write_result = _slow_write  # type: ignore[method-assign]
    from rdevos.cli import main

    sys.exit(main(sys.argv[2:]))
