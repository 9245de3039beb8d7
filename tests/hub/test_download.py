from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch

from rdevos import ModelNotFoundError, load_model, save_checkpoint
from rdevos.hub.download import download_url
from rdevos.model.network import RDEVOS


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server over tmp_path/www that records requested paths."""
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            seen.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, seen
    finally:
        httpd.shutdown()


def test_url_download_is_cached_and_hash_checked(server: tuple[str, Path, list[str]], tmp_path: Path,
                                                 tiny_model: RDEVOS, monkeypatch: pytest.MonkeyPatch) -> None:
    base, root, seen = server
    monkeypatch.setenv("RDEVOS_HOME", str(tmp_path / "cache"))
    ckpt = save_checkpoint(tiny_model, root / "tiny.pt")
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    model = load_model(f"{base}/tiny.pt#sha256={sha}", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))
    n = len(seen)
    assert n >= 1
    load_model(f"{base}/tiny.pt#sha256={sha}", progress=False)  # from the cache
    assert len(seen) == n
    assert list((tmp_path / "cache" / "downloads").glob("*/.part-*")) == []


def test_hash_mismatch_and_404(server: tuple[str, Path, list[str]], tmp_path: Path, tiny_model: RDEVOS) -> None:
    base, root, _ = server
    save_checkpoint(tiny_model, root / "tiny.pt")
    with pytest.raises(ModelNotFoundError, match="sha256 mismatch"):
        download_url(f"{base}/tiny.pt", "0" * 64, directory=tmp_path / "c", progress=False)
    assert not any(p.is_file() for p in (tmp_path / "c").rglob("*"))
    with pytest.raises(ModelNotFoundError, match="could not download"):
        download_url(f"{base}/missing.pt", directory=tmp_path / "c", progress=False)
