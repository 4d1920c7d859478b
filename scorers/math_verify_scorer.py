"""Verifiable math answers with Hugging Face's `math-verify` (no hand-written answer matching).

score = 1.0 when the response's final answer is mathematically equivalent to the prompt's reference, else 0.0.
A response with no parseable answer is wrong (0.0), not an error: the scorer did its job. An error row is
written only when the scorer cannot judge at all (no reference answer, math-verify raising).

`parse_reference` and `check_answer` are the one place pairsmith calls math-verify: the step search's +-1 outcome
(pipelines/step_pairs/outcome.py) and evaluation use them too.

math-verify's own timeouts use SIGALRM, which only works in the main thread; Prefect runs tasks in worker
threads, so the timeouts are disabled here (the inputs are short model outputs).
"""

from __future__ import annotations

import pandas as pd

from scorers import score_rows


def parse_reference(reference: str, gold_is_latex: bool = False):
    """The reference answer as math-verify's parsed gold; a reference that does not parse is an error."""
    from math_verify import parse
    gold = parse(reference if gold_is_latex else f"${reference}$", parsing_timeout=None)
    if not gold:
        raise ValueError(f"reference {reference!r} does not parse")
    return gold


def check_answer(text: str, gold) -> tuple[bool, list]:
    """(is the final answer of `text` equivalent to the gold, the answers math-verify extracted)."""
    from math_verify import parse, verify
    answer = parse(text, parsing_timeout=None)
    return bool(answer) and verify(gold, answer, timeout_seconds=None), answer


class MathVerifyScorer:
    name = "math_verify"

    def __init__(self, gold_is_latex: bool = False):
        self.gold_is_latex = gold_is_latex

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
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
                    golds[pid] = parse_reference(str(reference), self.gold_is_latex)
                correct, answer = check_answer(text, golds[pid])
            except Exception as e:  # noqa: BLE001 - any failure of the verifier is an error row, not a score
                scores.append(None), details.append(None), errors.append(f"math-verify: {type(e).__name__}: {e}")
                continue
            scores.append(1.0 if correct else 0.0)
            details.append({"extracted": [str(a) for a in answer], "reference": str(reference)})
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)
