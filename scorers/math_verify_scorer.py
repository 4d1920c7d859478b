"""Verifiable math answers with Hugging Face's `math-verify` (no hand-written answer matching).

score = 1.0 when the response's final answer is mathematically equivalent to the prompt's reference, else 0.0.
A response with no parseable answer is wrong (0.0), not an error: the scorer did its job. An error row is
written only when the scorer cannot judge at all (no reference answer, math-verify raising).

math-verify's own timeouts use SIGALRM, which only works in the main thread; Prefect runs tasks in worker
threads, so the timeouts are disabled here (the inputs are short model outputs).
"""

from __future__ import annotations

import pandas as pd

from scorers import score_rows


class MathVerifyScorer:
    name = "math_verify"

    def __init__(self, gold_is_latex: bool = False):
        self.gold_is_latex = gold_is_latex

    def _gold(self, reference: str):
        from math_verify import parse
        text = reference if self.gold_is_latex else f"${reference}$"
        return parse(text, parsing_timeout=None)

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        from math_verify import parse, verify

        references = prompts.set_index("prompt_id")["reference"]
        golds: dict[str, object] = {}
        scores, details, errors = [], [], []
        for pid, text in zip(candidates["prompt_id"], candidates["text"]):
            reference = references.get(pid)
            if reference is None or pd.isna(reference):
                scores.append(None), details.append(None), errors.append("prompt has no reference answer")
                continue
            try:
                if pid not in golds:
                    golds[pid] = self._gold(str(reference))
                if not golds[pid]:
                    raise ValueError(f"reference {reference!r} does not parse")
                answer = parse(text, parsing_timeout=None)
                correct = bool(answer) and verify(golds[pid], answer, timeout_seconds=None)
            except Exception as e:  # noqa: BLE001 - any failure of the verifier is an error row, not a score
                scores.append(None), details.append(None), errors.append(f"math-verify: {type(e).__name__}: {e}")
                continue
            scores.append(1.0 if correct else 0.0)
            details.append({"extracted": [str(a) for a in answer], "reference": str(reference)})
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)
