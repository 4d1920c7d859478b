"""build_pairs: prompts -> k samples -> scores -> chosen/rejected pairs, as a Prefect flow.

    python -m flows.build_pairs                          # the embedded CPU default
    python -m flows.build_pairs --config configs/vllm-gpu.yaml --sampler.k 8
    python -m flows.build_pairs --no-prefect             # the same stages without Prefect (executor: local or ray)
    python -m flows.build_pairs --help

Thin: every step is a function of pipelines.pairs.build; batches are Prefect tasks (flows/lazy.py).
"""

import sys

from flows.lazy import FlowModule
from pipelines.pairs.config import BuildConfig

_module = FlowModule.batched_build(
    "build_pairs", "pipelines.pairs.build", BuildConfig, task_name="sample-and-score-batch",
    publish="flows.reporting:publish_build_report",
    description="Build chosen/rejected preference pairs (TRL-ready Parquet) from prompts.")
__getattr__, main = _module.getattr, _module.main

if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
