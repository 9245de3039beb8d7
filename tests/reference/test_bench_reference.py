"""``rdevos bench --reference``: the reference runs in the same benchmark run, through benchmarks/bench_engine.py."""

from __future__ import annotations

from rdevos.eval.bench import run_bench


def test_reference_measured_in_the_same_run(reference) -> None:
    # 64 px, not less: the reference top-k fails when the memory holds fewer than top_k (40) entries
    rep = run_bench(resolutions=[64], lengths=[3], devices=["cpu"], reference=True, warmup=0, threads=1,
                    max_reference_length=3, progress=False)
    assert [(r.impl, r.precision, r.length) for r in rep.rows] == [("rdevos", "fp32", 3), ("reference", "fp32", 3)]
    ours, ref = rep.rows
    assert ours.error is None and ref.error is None, (ours.error, ref.error)
    assert (ours.height, ours.width) == (ref.height, ref.width) == (64, 114)
    assert ours.pid != ref.pid and ref.memory_bank_mib is None and ref.s_per_frame > 0
    assert rep.random_weights and any("reference" in n for n in rep.notes)
