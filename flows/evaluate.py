"""evaluate: accuracy of a model on held-out verifiable prompts (math-verify, or HumanEval pass@1 by execution).

    python -m flows.evaluate --model runs/train/model --output runs/eval/after.json
    python -m flows.evaluate --prompts.format humaneval --prompts.limit 20 --sampler.max_new_tokens 384
    python -m flows.evaluate --help

Thin: the work is pipelines.evaluate.run. Prefect and the model are imported only when the flow runs.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from flows import cli, single_step
from pipelines.evaluate import EvalConfig


@lru_cache(maxsize=1)
def _make_flow():
    return single_step.single_step_flow("evaluate", "pipelines.evaluate:run", EvalConfig)


def __getattr__(name: str):
    if name == "evaluate":
        return _make_flow()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=EvalConfig, prog="python -m flows.evaluate",
                       description="Accuracy of a model on held-out verifiable prompts (math-verify; HumanEval "
                                   "pass@1 by execution).",
                       make_flow=_make_flow, summary=single_step.summary("pipelines.evaluate:summary_text"),
                       run_local=single_step.local("pipelines.evaluate:run"))


if __name__ == "__main__":
    sys.exit(main())
