"""Exception types raised by rdevos.

Every error a user can trigger with bad input derives from :class:`RDEVOSError`, so callers can catch one type.
"""

from __future__ import annotations

__all__ = ["RDEVOSError", "InputError", "UsageError", "CheckpointError", "ModelNotFoundError"]


class RDEVOSError(Exception):
    """Base class of all rdevos errors."""


class InputError(RDEVOSError, ValueError):
    """Bad user input: frames, masks, videos, folders or arguments."""


class CheckpointError(RDEVOSError):
    """A checkpoint could not be read or does not match the architecture."""


class ModelNotFoundError(RDEVOSError, FileNotFoundError):
    """A model id, path or URL could not be resolved to weights."""


class UsageError(InputError):
    """A bad command-line option: a malformed or out-of-range value, or a path that cannot be used.

    The CLI reports it on one line and exits with status 2, like argparse's own errors.
    """
