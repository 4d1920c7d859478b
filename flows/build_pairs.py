"""build_pairs: prompts -> k samples -> scores -> chosen/rejected pairs, as a Prefect flow.

    python -m flows.build_pairs                          # the embedded CPU default
    python -m flows.build_pairs --config configs/vllm-gpu.yaml --sampler.k 8
    python -m flows.build_pairs --help

The flow is thin: every step is a function of pipelines.build; batches are Prefect tasks. Prefect is imported
only when the flow runs (PEP 562 module __getattr__), so `--help` and config errors answer in well under 2 s;
`from flows.build_pairs import build_pairs` and the entrypoint `flows/build_pairs.py:build_pairs` still give
the flow object to deployments.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import lru_cache

from flows import cli
from pipelines.config import BuildConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows import reporting
    from pipelines import build

    # Caching is done by pipelines.build's content-addressed shards (inputs + config + code), which also
    # survive kill -9 and work the same without Prefect; Prefect's own result cache would store a second copy.
    @task(name="sample-and-score-batch", cache_policy=NO_CACHE, task_run_name="batch-{batch.index}")
    def batch_task(run: build.Run, batch: build.Batch) -> build.BatchResult:
        return build.process_batch(run, batch, log=get_run_logger().info)

    # executor: ray. A subflow, so that the task runner follows the config parameter whatever starts the run
    # (CLI, deployment, UI): the batch tasks run as Ray tasks, the stages are the same functions.
    @flow(name="build-pairs-batches-on-ray", log_prints=True, validate_parameters=False)
    def ray_batches(run: build.Run) -> list[build.BatchResult]:
        from prefect_ray.context import remote_options
        with remote_options(**run.config.executor.task_resources):
            futures = [batch_task.submit(run, b) for b in run.batches]
        return reporting.gather(futures, [len(b.prompt_ids) for b in run.batches], key="build-pairs-progress")

    def batches_on_ray(run: build.Run) -> list[build.BatchResult]:
        from prefect_ray import RayTaskRunner
        ex = run.config.executor
        # Ray workers may run in another directory (or on another node, which must mount output_dir)
        run = dataclasses.replace(run, run_dir=run.run_dir.resolve(), cache_dir=run.cache_dir.resolve())
        runner = RayTaskRunner(address=ex.address, init_kwargs=dict(ex.init_kwargs))
        return ray_batches.with_options(task_runner=runner)(run)

    # One worker: a batch already saturates the cores (CPU) or the GPU; Ray scale-out swaps the task runner.
    @flow(name="build-pairs", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
    def build_pairs(config: BuildConfig = BuildConfig()) -> dict:
        logger = get_run_logger()
        run = build.prepare(config)
        logger.info(f"run {run.config.run_id}: {len(run.batches)} batches -> {run.run_dir}")
        if config.executor.name == "ray":
            results = batches_on_ray(run)
        else:
            futures = [batch_task.submit(run, b) for b in run.batches]
            results = reporting.gather(futures, [len(b.prompt_ids) for b in run.batches], key="build-pairs-progress")
        manifest = build.finalize(run, results)  # also writes plots/, report.html, README.md
        reporting.publish_build_report(manifest)
        return manifest

    return build_pairs


def __getattr__(name: str):
    if name == "build_pairs":
        return _make_flow()
    raise AttributeError(name)


def _run_local(config: BuildConfig) -> dict:
    from pipelines.build import run_local
    if config.executor.name != "local":
        print(f"note: executor {config.executor.name!r} is the Prefect flow's task runner; --no-prefect runs the "
              f"batches in this process", file=sys.stderr)
    return run_local(config)


def _summary(manifest: dict) -> str:
    from pipelines.report import summary_text
    return summary_text(manifest)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=BuildConfig, prog="python -m flows.build_pairs",
                       description="Build chosen/rejected preference pairs (TRL-ready Parquet) from prompts.",
                       make_flow=_make_flow, summary=_summary, run_local=_run_local)


if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
