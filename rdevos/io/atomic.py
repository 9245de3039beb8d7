"""The one atomic write: a temporary file next to the target, ``os.replace``-d onto it when complete.

An interrupted process never leaves a half-written file under the final name (no ``fsync``: atomic against
interruption, not against power loss). A write that fails (``ENOSPC``, ``EIO``) raises an ``OSError`` whose
``filename`` is the destination, and leaves the destination as it was. Permission rule, everywhere: the file gets
what a plain ``open(path, "w")`` would give, ``0o666`` minus the umask (``tempfile.mkstemp``'s ``0600`` is never
left on a result).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "write_bytes_atomic", "write_text_atomic"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``torch.save``, PyAV).

    Parent folders are created. On success the file is moved onto ``path``; on error it is removed and ``path`` is
    untouched.

    Args:
        path: final destination.
        suffix: the temporary name's ending (default ``.tmp``; give ``.mp4`` etc. to writers that pick the format
            from the name). A writer that leaves no file at the temporary path leaves ``path`` untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}{'.tmp' if suffix is None else suffix}"
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, dest)
    except OSError as e:
        # A failed write (full disk, I/O error) names no file, a failed open or rename the temporary one: name the
        # file being written instead, so the one error line says which it was.
        if e.errno is not None and (e.filename is None or str(e.filename) == str(tmp)):
            raise OSError(e.errno, e.strerror or str(e), str(dest)) from e
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; it replaces ``path`` on success.

    Yields:
        A binary file object.
    """
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:  # open() honours the umask, unlike mkstemp's 0600
        yield fh


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))
