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

from flows import cli, single_step
from pipelines.train_config import TrainConfig


@lru_cache(maxsize=1)
def _make_flow():
    return single_step.single_step_flow("train-dpo", "pipelines.train:run", TrainConfig)


def __getattr__(name: str):
    if name == "train_dpo":
        return _make_flow()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    return cli.run_cli(argv, config_cls=TrainConfig, prog="python -m flows.train_dpo",
                       description="DPO-train a model on pairs Parquet (TRL DPOTrainer; curriculum tiers in order; "
                                   "LoRA optional).",
                       make_flow=_make_flow, summary=single_step.summary("pipelines.train:summary_text"),
                       run_local=single_step.local("pipelines.train:run"))


if __name__ == "__main__":
    sys.exit(main())
