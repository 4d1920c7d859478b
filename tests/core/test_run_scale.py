"""The run core with thousands of batches: batches are row slices of prompts.parquet, a task's Run leaves the
list of batches out, progress reports about a hundred lines, the manifest says where batches ran."""

from __future__ import annotations

import pickle
import socket

import pyarrow.parquet as pq

from pipelines.core import executors, progress, schema
from pipelines.core import run as run_core
from pipelines.core.run import BatchResult
from pipelines.pairs.config import BuildConfig

N, SIZE = 12_000, 4  # 3,000 batches


def _plan(tmp_path) -> run_core.Run:
    prompts = schema.frame([dict(prompt_id=f"{i:08x}", source="t", row=i + 1,
                                 messages=[{"role": "user", "content": f"question {i}"}]) for i in range(N)],
                           schema.PROMPTS)
    config = BuildConfig.model_validate({"run_id": "many", "output_dir": str(tmp_path), "batch_size": SIZE})
    return run_core.plan_run(config, "pairs", prompts, schema.empty(schema.DROPS), lambda b: {"sample": b[0]})


def test_batches_read_their_prompts_as_row_slices(tmp_path):
    run = _plan(tmp_path)
    assert len(run.batches) == N // SIZE == run.batch_count
    meta = pq.ParquetFile(run.run_dir / "prompts.parquet").metadata
    assert meta.num_row_groups == -(-N // run_core.PROMPT_ROW_GROUP)  # groups of PROMPT_ROW_GROUP rows
    for batch in (run.batches[0], run.batches[255], run.batches[256], run.batches[-1]):  # 256*4 = a group edge
        assert batch.start == batch.index * SIZE
        rows = run.batch_prompts(batch)
        assert list(rows["prompt_id"]) == batch.prompt_ids
        assert [m[0]["content"] for m in rows["messages"]] == [f"question {int(p, 16)}" for p in batch.prompt_ids]


def test_a_tasks_run_carries_no_batch_list(tmp_path):
    run = _plan(tmp_path)
    task_run = run.for_tasks()
    assert task_run.batches == [] and task_run.batch_count == len(run.batches)
    assert task_run.run_dir.is_absolute() and task_run.cache_dir.is_absolute()
    assert len(pickle.dumps(task_run)) * 50 < len(pickle.dumps(run))
    # what a batch task does with it: its own batch's prompts, found without the list
    batch = run.batches[1234]
    assert list(task_run.batch_prompts(batch)["prompt_id"]) == batch.prompt_ids


def test_a_rewritten_prompts_file_falls_back_to_ids(tmp_path):
    run = _plan(tmp_path)
    batch = run.batches[7]
    moved = run_core.Batch(batch.index, batch.prompt_ids, batch.keys, start=batch.start + 1)  # wrong slice
    assert list(run.batch_prompts(moved)["prompt_id"]) == batch.prompt_ids


def test_thousands_of_batches_report_about_a_hundred_progress_lines(tmp_path):
    run = _plan(tmp_path)
    lines = []

    def noop(run_, batch, log=print):
        return BatchResult(batch.index, len(batch.prompt_ids), resumed=False)

    results = executors.run_batches(run, noop, log=lines.append)
    assert [r.index for r in results] == list(range(len(run.batches)))
    assert 100 <= len(lines) <= 102 and lines[0].startswith("batch 1/3000 done, 4/12000 prompts")
    assert lines[-1].startswith("batch 3000/3000 done, 12000/12000 prompts (100%)")
    manifest = run_core.manifest_header(run, results, run.prompts(), run.load_drops())
    assert manifest["batch_nodes"] == {socket.gethostname(): 3000}
    assert manifest["shards"] == {"plan": "shards.json", "sample": 3000}


def test_a_slow_run_reports_at_least_every_30_seconds(monkeypatch):
    clock = iter([0.0] + [10.0 * i for i in range(1, 12)])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = progress.BatchProgress(total_batches=1000, total_prompts=1000)
    reported = [i + 1 for i in range(11) if p.done(1)]
    assert reported == [1, 4, 7, 10]  # batch 1, then each first batch 30 s after the last line
