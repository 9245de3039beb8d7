"""Cached, hash-checked downloads of weight files."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
import urllib.request
from pathlib import Path

from rdevos.errors import ModelNotFoundError
from rdevos.io.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["cache_dir", "sha256_file", "download_url", "split_url_hash"]


def cache_dir() -> Path:
    """Weight cache: ``$RDEVOS_HOME``, else ``~/.cache/rdevos``."""
    root = os.environ.get("RDEVOS_HOME")
    return Path(root) if root else Path.home() / ".cache" / "rdevos"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def split_url_hash(url: str) -> tuple[str, str | None]:
    """Split ``https://host/file.pth#sha256=<hex>`` into the URL and the hash (or None)."""
    base, _, frag = url.partition("#")
    params = urllib.parse.parse_qs(frag)
    sha = params.get("sha256", [None])[0]
    return base, sha


def download_url(url: str, sha256: str | None = None, *, directory: Path | None = None,
                 progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` once into the cache and return the local path.

    The file is stored under ``<cache>/downloads/<sha256 or url-hash>/<filename>``, written to a temporary name and
    renamed when complete and verified, so an interrupted download is never mistaken for a finished one.

    Raises:
        ModelNotFoundError: the download failed or the hash does not match.
    """
    url, frag_sha = split_url_hash(url)
    sha256 = (sha256 or frag_sha or "").lower() or None
    name = Path(urllib.parse.urlparse(url).path).name or "weights.pth"
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()[:32]
    target_dir = (directory or cache_dir() / "downloads") / key
    target = target_dir / name
    if target.exists():
        if sha256 is None or sha256_file(target) == sha256:
            return target
        logger.warning("cached %s does not match its sha256, downloading again", target)
    target_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    h = hashlib.sha256()
    try:
        with atomic_path(target) as tmp, open(tmp, "xb") as out, \
                urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            digest = h.hexdigest()
            if sha256 is not None and digest != sha256:
                raise ModelNotFoundError(f"sha256 mismatch for {url}: expected {sha256}, got {digest}")
    except ModelNotFoundError:
        raise
    except OSError as e:
        raise ModelNotFoundError(f"could not download {url}: {e}") from e
    return target
