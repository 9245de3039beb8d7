from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rdevos.io.atomic import atomic_path, atomic_write, write_text_atomic


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_writes_replace_only_on_success_with_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        dest = tmp_path / "sub" / "a.bin"
        with atomic_write(dest) as fh:
            fh.write(b"one")
        assert dest.read_bytes() == b"one" and _mode(dest) == 0o644
        with pytest.raises(RuntimeError), atomic_write(dest) as fh:
            fh.write(b"half")
            raise RuntimeError
        assert dest.read_bytes() == b"one"
        ckpt = tmp_path / "m.pt"
        with atomic_path(ckpt) as tmp:  # torch.save wants a path: same rule
            torch.save({"x": torch.ones(2)}, tmp)
        assert torch.load(ckpt, weights_only=True)["x"].sum() == 2 and _mode(ckpt) == 0o644
        write_text_atomic(tmp_path / "t.txt", "héllo")
        assert (tmp_path / "t.txt").read_text("utf-8") == "héllo"
        assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temporary file left
    finally:
        os.umask(old)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_a_full_disk_names_the_file_being_written_and_keeps_the_old_one(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import rdevos.io.atomic as atomic

    dest = tmp_path / "out" / "00003.png"
    write_text_atomic(dest, "the earlier result")
    real_open = open
    monkeypatch.setattr(atomic, "open", lambda _path, mode: real_open("/dev/full", mode.replace("x", "w")),
                        raising=False)  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(OSError) as e:
        write_text_atomic(dest, "x" * 100_000)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(dest)
    assert dest.read_text() == "the earlier result"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["00003.png"]  # no temporary file left
