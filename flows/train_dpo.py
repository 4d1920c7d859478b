"""train_dpo: a pairs Parquet (or several curriculum tiers in order) -> TRL DPOTrainer -> model + metrics.

    python -m flows.train_dpo --pairs runs/<run_id>/pairs.parquet --max_steps 20     # LoRA on the embedded SmolLM2
    python -m flows.train_dpo --config configs/train-gpu.yaml --pairs runs/<run_id>/pairs.parquet
    python -m flows.train_dpo --help

Thin: the work is pipelines.train.run (tiers, reference models, LoRA merge, metrics). Prefect and TRL are
imported only when the flow runs.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from flows import cli
from pipelines.train_config import TrainConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from pipelines import train

    @task(name="train-dpo", cache_policy=NO_CACHE)
    def train_task(config: TrainConfig) -> dict:
        return train.run(config, log=get_run_logger().info)

    @flow(name="train-dpo", log_prints=True)
    def train_dpo(config: TrainConfig = TrainConfig()) -> dict:
        return train_task(config)

    return train_dpo


def __getattr__(name: str):
    if name == "train_dpo":
        return _make_flow()
    raise AttributeError(name)


def _run_local(config: TrainConfig) -> dict:
    from pipelines.train import run
    return run(config)


def _summary(metrics: dict) -> str:
    from pipelines.train import summary_text
    return summary_text(metrics)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=TrainConfig, prog="python -m flows.train_dpo",
                       description="DPO-train a model on pairs Parquet (TRL DPOTrainer; curriculum tiers in order; "
                                   "LoRA optional).",
                       make_flow=_make_flow, summary=_summary, run_local=_run_local)


if __name__ == "__main__":
    sys.exit(main())
