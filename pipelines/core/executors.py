"""Where a run's batches execute. The stages do not change; only the executor does (`executor:` in the config).

- local: one batch after another in this process (a batch already saturates the CPU cores or the GPU);
- ray: one Ray task per batch on a Ray cluster: a local one started for the run (and stopped after it), or the
  one at `executor.address` ("auto": the cluster `ray start --head` runs here; "ray://head:10001": a remote
  one). Each task asks for `executor.task_resources` (default: Ray's one CPU); results are gathered as they
  finish. Workers load the sampler once per worker process and find finished batches through the shard cache,
  so `output_dir` must be on storage every node mounts.

Without Prefect (`--no-prefect`, iterate's builds, notebooks) `run_batches` runs them; the Prefect flows run the
same `process_batch` as Prefect tasks on the matching task runner (flows/lazy.py), so each batch is a task in
the UI. Either way a progress line is logged per finished batch, and `schedule` starts the batches in order under
the token budget (`budget.max_total_tokens`): a batch starts only while the tokens of the finished batches plus
the bounds of the running ones and its own fit. So the run stops at a batch boundary, the same one whatever runs
the batches (a resumed batch counts the tokens it spent the first time); every batch not started gets a
`budget_exhausted` result, and the build drops its prompts with that reason.
"""

from __future__ import annotations

from typing import Any, Callable

from pipelines.core.progress import BatchProgress, to_stderr
from pipelines.core.run import Batch, BatchResult, Run

ProcessBatch = Callable[..., BatchResult]  # process_batch(run, batch, log=...) -> BatchResult


def schedule(run: Run, submit: Callable[[Batch], Any], next_done: Callable[[list], tuple[Any, BatchResult]],
             arrived: Callable[[BatchResult], None], log=to_stderr) -> list[BatchResult]:
    """Start the run's batches in order, as many at once as the budget allows (all of them without one).

    submit(batch) -> a handle (a future, a Ray object ref); next_done(handles) -> (handle, result) of one that
    finished. Returns a result per batch, in batch order; arrived(result) is called as each one finishes."""
    limit = run.config.budget.max_total_tokens if run.bounds is not None else None
    pending, running, results, spent = list(run.batches), {}, {}, 0

    def fits(batch: Batch) -> bool:
        if limit is None:
            return True
        reserved = sum(run.bounds[b.index] for b in running.values())
        return spent + reserved + run.bounds[batch.index] <= limit

    while pending or running:
        while pending and fits(pending[0]):
            batch = pending.pop(0)
            running[submit(batch)] = batch
        if not running:  # nothing runs, and the next batch still does not fit: the budget is spent
            break
        handle, result = next_done(list(running))
        del running[handle]
        spent += result.total_tokens
        results[result.index] = result
        arrived(result)
    if pending:
        first = pending[0]
        log(f"budget: stopped before batch {first.index + 1}/{len(run.batches)}: {spent:,} tokens spent + its "
            f"bound {run.bounds[first.index]:,} would pass max_total_tokens {limit:,}; "
            f"{sum(len(b.prompt_ids) for b in pending)} prompts not sampled")
    for batch in pending:
        results[batch.index] = BatchResult(batch.index, len(batch.prompt_ids), resumed=False, budget_exhausted=True)
    return [results[b.index] for b in run.batches]


class _Finished:
    """A batch the local executor ran inside `submit`: its handle is the result itself."""

    def __init__(self, result: BatchResult):
        self.result = result


def run_batches(run: Run, process_batch: ProcessBatch, log=to_stderr) -> list[BatchResult]:
    """Every batch of the run through process_batch, on the config's executor; results in batch order."""
    progress = BatchProgress(len(run.batches), sum(len(b.prompt_ids) for b in run.batches))

    def arrived(result: BatchResult) -> None:
        line = progress.done(result.prompts, resumed=result.resumed)
        if line:
            log(line)

    executor = run.config.executor
    if executor.name == "ray":
        return _on_ray(run, process_batch, executor, arrived, log)
    return schedule(run, lambda batch: _Finished(process_batch(run, batch, log=log)),
                    lambda handles: (handles[0], handles[0].result), arrived, log)


def ray_init_kwargs(executor) -> dict:
    """ray.init arguments for an executor section (also prefect-ray's RayTaskRunner's)."""
    return {"address": executor.address, **executor.init_kwargs}


def _process_quietly(process_batch: ProcessBatch, run: Run, batch) -> BatchResult:
    return process_batch(run, batch, log=lambda message: None)  # a worker's prints would interleave


def _on_ray(run: Run, process_batch: ProcessBatch, executor, arrived, log) -> list[BatchResult]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(**ray_init_kwargs(executor))
    try:
        task = ray.remote(**executor.task_resources)(_process_quietly) if executor.task_resources \
            else ray.remote(_process_quietly)
        shared = ray.put(run.for_tasks())  # once in the object store, not once per task

        def next_done(refs):
            done, _ = ray.wait(refs, num_returns=1)
            return done[0], ray.get(done[0])
        return schedule(run, lambda batch: task.remote(process_batch, shared, batch), next_done, arrived, log)
    finally:
        if started_here:
            ray.shutdown()
