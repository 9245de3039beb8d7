from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from rdevos import InputError
from rdevos.cli import main
from rdevos.eval import bench
from rdevos.hub import save_checkpoint
from rdevos.model.network import RDEVOS


def test_cli_bench_two_lengths_json_and_plot(tmp_path: Path, tiny_model: RDEVOS,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib missing (pip install 'rdevos[bench]'): no plot to test")
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["-q", "bench", "--resolutions", "64", "--lengths", "6,3", "--precision", "fp32", "--device", "cpu",
                 "--objects", "2", "--model", str(ckpt), "--warmup", "1", "--threads", "1", "-o", str(out),
                 "--plot", str(png), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"model: {ckpt}" in printed and "wrote" in printed
    rep = json.loads(out.read_text())
    assert rep["random_weights"] is False
    assert rep["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    rows = rep["rows"]
    assert [(r["impl"], r["device"], r["precision"], r["resolution"], r["length"]) for r in rows] == \
        [("rdevos", "cpu", "fp32", 64, 3), ("rdevos", "cpu", "fp32", 64, 6)]
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids  # one fresh process per configuration
    for r in rows:
        assert r["error"] is None and r["objects"] == 2 and r["threads"] == 1
        assert r["height"] == 64 and r["width"] == 114  # the sample's 16:9 frames at short side 64
        assert r["fps"] > 0 and r["s_per_frame"] == pytest.approx(1 / r["fps"])
        assert r["seconds"] == pytest.approx(r["length"] * r["s_per_frame"])
        assert "cuda_max_allocated_mib" in r and r["cuda_max_allocated_mib"] is None  # present, null on CPU
        assert 50 < r["peak_rss_mib"] < 8192 and r["memory_bank_mib"] > 0
        if r["run_peak_rss_mib"] is not None:  # Linux
            assert r["rss_before_mib"] <= r["run_peak_rss_mib"] <= r["peak_rss_mib"]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_random_weights_row_and_table() -> None:
    row = bench.measure(bench.BenchConfig(resolution=48, length=2, objects=3, warmup=0, threads=1))
    assert row.error is None and row.height == 48 and row.memory_bank_mib and row.cuda_max_allocated_mib is None
    rep = bench.BenchReport(rows=[row, bench.BenchRow("reference", "cpu", "fp32", 48, 9, 3, error="boom")],
                            model="official architecture, random weights", random_weights=True, parameters=1,
                            settings={}, machine={})
    table = bench.format_bench_table(rep)
    assert "random weights" in table and "failed: boom" in table


def test_bench_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # bad options: one line, exit status 2, before anything is measured
    for args, words in [(["--lengths", "10,x"], "argument --lengths: 'x': must be a whole number"),
                        (["--lengths", "0"], "argument --lengths: '0': must be >= 1"),
                        (["--resolutions", "8"], "argument --resolutions: '8': must be"),
                        (["--precision", "fp8"], "argument --precision: 'fp8': unknown value"),
                        (["--device", "cpu,gpu"], "argument --device: 'gpu': unknown device"),
                        (["--objects", "0"], "argument --objects: must be >= 1"),
                        (["--timeout", "-1"], "argument --timeout: must be a number > 0"),
                        (["--plot", str(tmp_path)], "is a folder")]:
        assert main(["-q", "bench", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("rdevos: error: ") and err.count("\n") == 1 and words in err, (args, err)
    with pytest.raises(InputError, match="cannot split"):
        bench.run_bench(resolutions=[16], lengths=[2], objects=40, progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert main(["-q", "bench", "--lengths", "2", "--plot", str(tmp_path / "p.png")]) == 1
    assert "pip install 'rdevos[bench]'" in capsys.readouterr().err
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site-packages" / "rdevos" / "eval" / "bench.py"))
    with pytest.raises(InputError, match="source checkout"):
        bench.reference_script()


def test_table_shows_ratio_to_reference_and_cpu_flags() -> None:
    rows = [bench.BenchRow("rdevos", "cpu", "bf16", 480, 8, 2, s_per_frame=0.5, fps=2.0),
            bench.BenchRow("reference", "cpu", "fp32", 480, 8, 2, s_per_frame=2.0, fps=0.5)]
    rep = bench.BenchReport(rows=rows, model="m", random_weights=True, parameters=1, settings={},
                            machine={"cpu": "Some CPU", "cpu_flags": ["avx512_bf16"], "torch_threads": 2})
    table = bench.format_bench_table(rep)
    assert "x ref" in table and " 4.00" in table.splitlines()[2]
    assert "machine: Some CPU (avx512_bf16), 2 torch thread(s)" in table
    m = bench._machine()
    assert {"cpu_flags", "cpu_amx", "cpu_default_precision"} <= m.keys()


def test_peers_without_their_extra_fail_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for module in ("sam2", "sam2.build_sam", "cutie", "cutie.inference", "cutie.inference.inference_core",
                   "hydra"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"extra 'peers' \(missing: sam2, rf-cutie, hydra-core\).*pip install 'rdevos\[peers\]'"):
        bench.require_peers()
    assert main(["-q", "bench", "--lengths", "2", "--peers"]) == 1  # before anything is measured
    err = capsys.readouterr().err
    assert err.startswith("rdevos: error: --peers needs the optional extra 'peers'") and err.count("\n") == 1


@pytest.mark.parametrize("peer", ["cutie-small",
                                  pytest.param("sam2.1-tiny", marks=pytest.mark.slow)])  # ~1 min a frame loaded
def test_a_peer_runs_on_the_bench_clip_with_random_weights(peer: str) -> None:
    try:
        bench.require_peers()
    except InputError as e:
        pytest.skip(str(e))
    row = bench.measure(bench.BenchConfig(impl=peer, resolution=64, length=2, objects=2, warmup=0, threads=1))
    assert row.error is None and row.impl == peer and (row.height, row.width) == (64, 114)
    assert row.s_per_frame > 0 and row.cpu_s_per_frame > 0 and row.peak_rss_mib > 50
