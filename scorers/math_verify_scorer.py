"""Verifiable math answers with Hugging Face's `math-verify` (no hand-written answer matching).

score = 1.0 when the response's final answer is mathematically equivalent to the prompt's reference, else 0.0.
A response with no parseable answer is wrong (0.0), not an error: the scorer did its job. An error row is
written only when the scorer cannot judge: no reference answer, math-verify raising, or the answer taking longer
than `timeout_s` to verify (reason `timeout` in the details: an answer such as 9^(9^(9^9)) makes sympy compute
without end). math-verify runs in worker processes with a hard deadline per answer
(scorers/math_verify_pool.py), so one such answer costs its own row, not the run.

The step search's +-1 outcome (pipelines/step_pairs/outcome.py) and evaluation go through the same pool.
"""

from __future__ import annotations

import pandas as pd

from scorers import score_rows
from scorers.math_verify_pool import DEFAULT_TIMEOUT_S, shared_pool


class MathVerifyScorer:
    name = "math_verify"

    def __init__(self, gold_is_latex: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None):
        if timeout_s <= 0:
            raise ValueError(f"math_verify: timeout_s must be > 0, got {timeout_s}")
        self.gold_is_latex = gold_is_latex
        self.pool = shared_pool(timeout_s, workers)  # starts the workers now: they import math-verify meanwhile

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        references = prompts.set_index("prompt_id")["reference"]
        rows, items = [], []
        for pid, text in zip(candidates["prompt_id"], candidates["text"]):
            reference = references.get(pid)
            if reference is None or pd.isna(reference):
                rows.append(None)
            else:
                rows.append(len(items))
                items.append((str(text), str(reference), self.gold_is_latex))
        outcomes = self.pool.check(items)
        scores, details, errors = [], [], []
        for row, pid in zip(rows, candidates["prompt_id"]):
            if row is None:
                scores.append(None), details.append(None), errors.append("prompt has no reference answer")
                continue
            outcome, reference = outcomes[row], items[row][1]
            if "error" in outcome:
                scores.append(None), errors.append(outcome["error"])
                details.append({"reason": outcome["reason"], "reference": reference,
                                **({"seconds": outcome["seconds"], "timeout_s": self.pool.timeout_s}
                                   if outcome["reason"] == "timeout" else {})})
                continue
            scores.append(1.0 if outcome["correct"] else 0.0)
            details.append({"extracted": outcome["extracted"], "reference": reference})
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)
