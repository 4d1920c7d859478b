"""iterate: on-policy DPO rounds: sample with the last policy -> score -> select -> train -> evaluate, resumable.

    python -m flows.iterate --rounds 3 --build.prompts.limit 64 --train.max_steps 50
    python -m flows.iterate --config configs/iterate.yaml       # rerun the same command to resume
    python -m flows.iterate --help

Thin: the rounds, resume and the manifest are pipelines.iterate.run; here each step is a Prefect task.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from flows import cli
from pipelines.iterate import IterateConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from pipelines import build, evaluate, iterate, train

    # resume is iterate's own markers (manifest.json, metrics.json, eval.json), as in build_pairs
    @task(name="build-pairs", cache_policy=NO_CACHE, task_run_name="build-{config.run_id}")
    def build_task(config):
        return build.run_local(config, log=get_run_logger().info)

    @task(name="train-dpo", cache_policy=NO_CACHE)
    def train_task(config):
        return train.run(config, log=get_run_logger().info)

    @task(name="evaluate", cache_policy=NO_CACHE)
    def eval_task(config):
        return evaluate.run(config, log=get_run_logger().info)

    @flow(name="iterate", log_prints=True)
    def iterate_flow(config: IterateConfig = IterateConfig()) -> dict:
        steps = iterate.Steps(build=build_task, train=train_task, evaluate=eval_task)
        return iterate.run(config, steps=steps, log=get_run_logger().info)

    return iterate_flow


def __getattr__(name: str):
    if name == "iterate":
        return _make_flow()
    raise AttributeError(name)


def _run_local(config: IterateConfig) -> dict:
    from pipelines.iterate import run
    return run(config)


def _summary(result: dict) -> str:
    from pipelines.iterate import summary_text
    return summary_text(result)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=IterateConfig, prog="python -m flows.iterate",
                       description="Iterative on-policy DPO: each round samples with the previous round's model, "
                                   "builds pairs, trains and evaluates on held-out prompts; resumable by round.",
                       make_flow=_make_flow, summary=_summary, run_local=_run_local)


if __name__ == "__main__":
    sys.exit(main())
