"""build_step_pairs: prompts -> MCTS trees over reasoning steps -> step-level chosen/rejected pairs (Prefect flow).

    python -m flows.build_step_pairs --no-prefect --prompts.limit 2          # the embedded CPU default
    python -m flows.build_step_pairs --config configs/step_pairs.yaml --mcts.iterations 8
    python -m flows.build_step_pairs --help

Thin, like flows/build_pairs.py: every step is a function of pipelines.step_build; batches are Prefect tasks;
Prefect is imported only when the flow runs, and the CLI flags are generated from StepPairsConfig.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from flows import cli
from pipelines.step_config import StepPairsConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows import reporting
    from pipelines import step_build

    # resume is step_build's content-addressed shards, as in build_pairs
    @task(name="search-batch", cache_policy=NO_CACHE, task_run_name="batch-{batch.index}")
    def batch_task(run: step_build.Run, batch: step_build.Batch) -> step_build.BatchResult:
        return step_build.process_batch(run, batch, log=get_run_logger().info)

    @flow(name="build-step-pairs", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
    def build_step_pairs(config: StepPairsConfig = StepPairsConfig()) -> dict:
        run = step_build.prepare(config)
        get_run_logger().info(f"run {run.config.run_id}: {len(run.batches)} batches -> {run.run_dir}")
        futures = [batch_task.submit(run, b) for b in run.batches]
        results = reporting.gather(futures, [len(b.prompt_ids) for b in run.batches],
                                   key="build-step-pairs-progress")
        manifest = step_build.finalize(run, results)
        reporting.publish_step_report(manifest)
        return manifest

    return build_step_pairs


def __getattr__(name: str):
    if name == "build_step_pairs":
        return _make_flow()
    raise AttributeError(name)


def _run_local(config: StepPairsConfig) -> dict:
    from pipelines.step_build import run_local
    return run_local(config)


def _summary(manifest: dict) -> str:
    from pipelines.step_build import summary_text
    return summary_text(manifest)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=StepPairsConfig, prog="python -m flows.build_step_pairs",
                       description="Build step-level chosen/rejected pairs (MCTS-DPO trees, Step-DPO first-error "
                                   "correction).",
                       make_flow=_make_flow, summary=_summary, run_local=_run_local)


if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
