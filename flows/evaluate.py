"""evaluate: accuracy of a model on held-out verifiable prompts (math-verify, or HumanEval pass@1 by execution).

    python -m flows.evaluate --model runs/train/model --output runs/eval/after.json
    python -m flows.evaluate --prompts.format humaneval --prompts.limit 20 --sampler.max_new_tokens 384
    python -m flows.evaluate --help

Thin: the work is pipelines.evaluation.evaluate.run.
"""

import sys

from flows.lazy import FlowModule
from pipelines.evaluation.config import EvalConfig

_module = FlowModule.single_call(
    "evaluate", "pipelines.evaluation.evaluate", EvalConfig,
    "Accuracy of a model on held-out verifiable prompts (math-verify; HumanEval pass@1 by execution).")
__getattr__, main = _module.getattr, _module.main

if __name__ == "__main__":
    sys.exit(main())
