"""What the flows show in the Prefect UI besides logs: batch progress (log lines and a progress artifact) and
the run's report as a markdown artifact. Called inside a running flow (Prefect is imported by the caller)."""

from __future__ import annotations

from pipelines.core.progress import BatchProgress


def gather(run, submit, key: str) -> list:
    """Run the batches through submit(batch, bar, prompts_before) -> a Prefect future, in order under the run's
    token budget (pipelines/core/executors.py:schedule), logging "batch 3/10 done, 240/800 prompts, ..., ETA" and
    moving a progress bar (artifact `key`) as each one arrives; inside a batch the task moves the same bar as the
    sampler reports (`bar`, and the prompts of the batches before it). Results in batch order."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed

    from pipelines.core.executors import schedule
    logger = get_run_logger()
    sizes = [len(b.prompt_ids) for b in run.batches]
    progress = BatchProgress(len(sizes), sum(sizes))
    bar = create_progress_artifact(0.0, key=key, description="prompts done")
    before = [0]  # prompts of the batches before each one
    for size in sizes[:-1]:
        before.append(before[-1] + size)

    def arrived(result) -> None:
        line = progress.done(result.prompts, resumed=result.resumed)
        if line:  # about a hundred lines (and bar updates) however many batches: see BatchProgress
            logger.info(line)
            update_progress_artifact(bar, 100.0 * progress.fraction)

    def next_done(futures):
        future = next(as_completed(futures))
        return future, future.result()

    return schedule(run, lambda batch: submit(batch, bar, before[batch.index]), next_done, arrived,
                    log=logger.info)


def live_bar(bar, prompts_before: int, batch_prompts: int, total_prompts: int):
    """on_fraction for a batch task: the share of this batch sampled -> the run's progress artifact."""
    if bar is None or not total_prompts:
        return None
    from prefect.artifacts import update_progress_artifact

    def on_fraction(fraction: float) -> None:
        update_progress_artifact(bar, 100.0 * (prompts_before + fraction * batch_prompts) / total_prompts)
    return on_fraction


def publish_build_report(manifest: dict, key: str = "build-pairs-report") -> None:
    """The summary table and the run's figures (inlined) as one markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    from pipelines.reporting import report
    figures = {k: v for k, v in manifest.get("reports", {}).items() if k in report.FIGURE_TITLES}
    create_markdown_artifact(report.artifact_markdown(manifest, figures), key=key,
                             description=f"pairsmith run {manifest['run_id']}: counts, drops, timings, plots")


def publish_step_report(manifest: dict, key: str = "build-step-pairs-summary") -> None:
    from prefect.artifacts import create_markdown_artifact

    from pipelines.reporting import report
    create_markdown_artifact(report.step_summary_markdown(manifest), key=key,
                             description=f"pairsmith step-pairs run {manifest['run_id']}")
