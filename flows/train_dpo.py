"""train_dpo: a pairs Parquet (or several curriculum tiers in order) -> TRL DPOTrainer -> model + metrics.

    python -m flows.train_dpo --pairs runs/<run_id>/pairs.parquet --max_steps 20     # LoRA on the embedded SmolLM2
    python -m flows.train_dpo --config configs/train-gpu.yaml --pairs runs/<run_id>/pairs.parquet
    python -m flows.train_dpo --help

Thin: the work is pipelines.training.dpo.run (tiers, reference models, LoRA merge, metrics).
"""

import sys

from flows.lazy import FlowModule
from pipelines.training.config import TrainConfig

_module = FlowModule.single_call(
    "train_dpo", "pipelines.training.dpo", TrainConfig,
    "DPO-train a model on pairs Parquet (TRL DPOTrainer; curriculum tiers in order; LoRA optional).")
__getattr__, main = _module.getattr, _module.main

if __name__ == "__main__":
    sys.exit(main())
