from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

import rdevos
from rdevos.train import TrainConfig, run_training
from tests.conftest import REPO, TINY


def _config(out: Path) -> dict:
    return {"model": TINY.to_dict(), "precision": "fp32", "output_dir": str(out), "checkpoint_every": 2,
            "log_every": 1, "seed": 3, "threads": 1,
            "stages": [{"name": "ddp", "num_frames": 3, "crop_size": 48, "iterations": 3, "batch_size": 1,
                        "lr": 1e-3, "optimizer": "adam", "sources": [{"kind": "synthetic", "length": 8}]}]}


def test_torchrun_two_processes_gloo_matches_one_process_batch_2(tmp_path: Path) -> None:
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(tmp_path / "ddp")))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rdevos.train", "--config", str(cfg_path), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    final = tmp_path / "ddp" / "final.pth"
    assert proc.stdout.strip().splitlines()[-1] == str(final)
    # rank 0 alone writes checkpoints and logs: one scalar line per iteration
    lines = (tmp_path / "ddp" / "logs" / "scalars.jsonl").read_text().splitlines()
    assert len(lines) == 3
    ddp = rdevos.load_model(final).state_dict()
    # The same 2 clips per step in one process with batch 2 give the same weights (DDP averages gradients;
    # synthetic clips depend only on their index, and ranks take alternate items like DistributedSampler).
    d = _config(tmp_path / "single")
    d["stages"][0]["batch_size"] = 2
    single = rdevos.load_model(run_training(TrainConfig.from_dict(d), progress=False)).state_dict()
    torch.set_num_threads(2)
    diffs = {k: float((ddp[k].float() - single[k].float()).abs().max()) for k in ddp}
    assert max(diffs.values()) < 1e-4, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    assert elapsed < 120


def test_sigterm_writes_a_resumable_checkpoint(tmp_path: Path) -> None:
    d = _config(tmp_path / "run")
    d["stages"][0]["iterations"] = 10_000
    d["checkpoint_every"] = 10_000
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "rdevos.train", "--config", str(cfg_path), "--no-progress", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "logs" / "scalars.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.terminate()  # SIGTERM
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    ckpt = Path(out.strip().splitlines()[-1])
    assert ckpt.parent.name == "checkpoints" and ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert 2 <= state["iteration"] < 10_000
