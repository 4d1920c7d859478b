"""Where a run's batches execute. The stages do not change; only the executor does (`executor:` in the config).

- local: one batch after another in this process (a batch already saturates the CPU cores or the GPU);
- ray: one Ray task per batch on a Ray cluster: a local one started for the run (and stopped after it), or the
  one at `executor.address` ("auto": the cluster `ray start --head` runs here; "ray://head:10001": a remote
  one). Each task asks for `executor.task_resources` (default: Ray's one CPU); results are gathered as they
  finish. Workers load the sampler once per worker process and find finished batches through the shard cache,
  so `output_dir` must be on storage every node mounts.

Without Prefect (`--no-prefect`, iterate's builds, notebooks) `run_batches` runs them; the Prefect flows run the
same `process_batch` as Prefect tasks on the matching task runner (flows/lazy.py), so each batch is a task in
the UI. Either way a progress line is logged per finished batch.
"""

from __future__ import annotations

from typing import Callable

from pipelines.core.progress import BatchProgress, to_stderr
from pipelines.core.run import BatchResult, Run

ProcessBatch = Callable[..., BatchResult]  # process_batch(run, batch, log=...) -> BatchResult


def run_batches(run: Run, process_batch: ProcessBatch, log=to_stderr) -> list[BatchResult]:
    """Every batch of the run through process_batch, on the config's executor; results in batch order."""
    progress = BatchProgress(len(run.batches), sum(len(b.prompt_ids) for b in run.batches))

    def arrived(result: BatchResult) -> None:
        line = progress.done(result.prompts, resumed=result.resumed)
        if line:
            log(line)

    executor = run.config.executor
    if executor.name == "ray":
        return _on_ray(run, process_batch, executor, arrived)
    results = []
    for batch in run.batches:
        results.append(process_batch(run, batch, log=log))
        arrived(results[-1])
    return results


def ray_init_kwargs(executor) -> dict:
    """ray.init arguments for an executor section (also prefect-ray's RayTaskRunner's)."""
    return {"address": executor.address, **executor.init_kwargs}


def _process_quietly(process_batch: ProcessBatch, run: Run, batch) -> BatchResult:
    return process_batch(run, batch, log=lambda message: None)  # a worker's prints would interleave


def _on_ray(run: Run, process_batch: ProcessBatch, executor, arrived) -> list[BatchResult]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(**ray_init_kwargs(executor))
    try:
        task = ray.remote(**executor.task_resources)(_process_quietly) if executor.task_resources \
            else ray.remote(_process_quietly)
        shared = ray.put(run.for_tasks())  # once in the object store, not once per task
        pending = [task.remote(process_batch, shared, batch) for batch in run.batches]
        results: dict[int, BatchResult] = {}
        while pending:
            ray.wait(pending, num_returns=1)  # block for the next one, then take every one that is ready
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            for result in ray.get(done):
                results[result.index] = result
                arrived(result)
        return [results[batch.index] for batch in run.batches]
    finally:
        if started_here:
            ray.shutdown()
