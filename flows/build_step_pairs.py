"""build_step_pairs: prompts -> MCTS trees over reasoning steps -> step-level chosen/rejected pairs (Prefect flow).

    python -m flows.build_step_pairs --no-prefect --prompts.limit 2          # the embedded CPU default
    python -m flows.build_step_pairs --config configs/step_pairs.yaml --mcts.iterations 8
    python -m flows.build_step_pairs --help

Thin: every step is a function of pipelines.step_pairs.build; batches are Prefect tasks (flows/lazy.py).
"""

import sys

from flows.lazy import FlowModule
from pipelines.step_pairs.config import StepPairsConfig

_module = FlowModule.batched_build(
    "build_step_pairs", "pipelines.step_pairs.build", StepPairsConfig, task_name="search-batch",
    publish="flows.reporting:publish_step_report",
    description="Build step-level chosen/rejected pairs (MCTS-DPO trees, Step-DPO first-error correction).")
__getattr__, main = _module.getattr, _module.main

if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
