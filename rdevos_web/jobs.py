"""The web app's jobs, without Gradio: one import for the job store, the work folder and the run adapter.

* :mod:`rdevos_web.store`: a job's record (the single source of truth: status, objects, settings, masks, version);
* :mod:`rdevos_web.uploads`: the work folder and the import of uploads;
* :mod:`rdevos_web.runner`: background runs (:class:`JobManager`);
* :mod:`rdevos_web.exports`: the downloads.
"""

from __future__ import annotations

from rdevos_web.runner import JobManager, available_devices, model_problem
from rdevos_web.store import (ACTIVE, DIRECTIONS, START_MODES, Job, JobInfo, JobSettings, JobStatus, ObjectInfo,
                              RunSettings, compose, plural, safe_name)
from rdevos_web.uploads import ACCEPTED_EXTENSIONS, SAMPLE_NAME, Upload, WorkFolder

__all__ = ["JobStatus", "JobInfo", "RunSettings", "JobSettings", "Job", "WorkFolder", "JobManager", "Upload",
           "ACCEPTED_EXTENSIONS", "safe_name", "ObjectInfo", "SAMPLE_NAME", "plural", "ACTIVE", "DIRECTIONS",
           "START_MODES", "compose", "available_devices", "model_problem"]
