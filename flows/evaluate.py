"""evaluate: accuracy of a model on held-out verifiable prompts (math-verify, or HumanEval pass@1 by execution).

    python -m flows.evaluate --model runs/train/model --output runs/eval/after.json
    python -m flows.evaluate --prompts.format humaneval --prompts.limit 20 --sampler.max_new_tokens 384
    python -m flows.evaluate --help

Thin: the work is pipelines.evaluate.run. Prefect and the model are imported only when the flow runs.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from flows import cli
from pipelines.evaluate import EvalConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from pipelines import evaluate as ev

    @task(name="evaluate", cache_policy=NO_CACHE)
    def eval_task(config: EvalConfig) -> dict:
        return ev.run(config, log=get_run_logger().info)

    @flow(name="evaluate", log_prints=True)
    def evaluate(config: EvalConfig = EvalConfig()) -> dict:
        return eval_task(config)

    return evaluate


def __getattr__(name: str):
    if name == "evaluate":
        return _make_flow()
    raise AttributeError(name)


def _run_local(config: EvalConfig) -> dict:
    from pipelines.evaluate import run
    return run(config)


def _summary(result: dict) -> str:
    from pipelines.evaluate import summary_text
    return summary_text(result)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=EvalConfig, prog="python -m flows.evaluate",
                       description="Accuracy of a model on held-out verifiable prompts (math-verify; HumanEval "
                                   "pass@1 by execution).",
                       make_flow=_make_flow, summary=_summary, run_local=_run_local)


if __name__ == "__main__":
    sys.exit(main())
