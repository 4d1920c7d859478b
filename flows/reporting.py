"""What the flows show in the Prefect UI besides logs: batch progress (log lines and a progress artifact) and
the run's report as a markdown artifact. Called inside a running flow (Prefect is imported by the caller)."""

from __future__ import annotations

from pipelines.core.progress import BatchProgress


def gather(futures: list, sizes: list[int], key: str) -> list:
    """Results of the batch futures in order, logging "batch 3/10 done, 240/800 prompts, ..., ETA" and moving a
    progress bar (artifact `key`) as each one arrives. sizes: prompts per batch."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    logger = get_run_logger()
    progress = BatchProgress(len(futures), sum(sizes))
    bar = create_progress_artifact(0.0, key=key, description="prompts done")
    results = []
    for future, size in zip(futures, sizes):
        result = future.result()
        results.append(result)
        line = progress.done(size, resumed=result.resumed)
        if line:  # about a hundred lines (and bar updates) however many batches: see BatchProgress
            logger.info(line)
            update_progress_artifact(bar, 100.0 * progress.fraction)
    return results


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
