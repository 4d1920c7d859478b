"""Batch progress lines: prompts done, elapsed time and the ETA from the computed (not resumed) batches."""

from __future__ import annotations


def test_batch_progress_lines_and_eta(monkeypatch):
    from pipelines.core import progress
    clock = iter([100.0, 130.0, 160.0, 161.0])  # start, then one reading per finished batch
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = progress.BatchProgress(total_batches=3, total_prompts=80)
    assert p.done(30, resumed=True) == "batch 1/3 done, 30/80 prompts (38%), 30s elapsed, ETA unknown"
    # 60 s elapsed, 30 prompts computed (the resumed batch is not in the rate): 2 s/prompt, 20 left
    assert p.done(30) == "batch 2/3 done, 60/80 prompts (75%), 1m00s elapsed, ETA 40s"
    assert p.done(20) == "batch 3/3 done, 80/80 prompts (100%), 1m01s elapsed, done"
    assert p.fraction == 1.0
