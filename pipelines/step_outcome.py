"""The terminal reward of the step search: math-verify checks an answer text against the reference, +1 / -1.

Same checking as scorers/math_verify_scorer.py (the reference parsed as `$...$`, math-verify's SIGALRM timeouts
off because Prefect runs tasks in threads). A text without a parseable answer is wrong (-1).
"""

from __future__ import annotations


class MathOutcome:
    def __init__(self):
        self._gold: dict[str, object] = {}

    def __call__(self, text: str, reference: str) -> float:
        from math_verify import parse, verify
        if reference not in self._gold:
            self._gold[reference] = parse(f"${reference}$", parsing_timeout=None)
        gold = self._gold[reference]
        if not gold:
            raise ValueError(f"reference {reference!r} does not parse")
        try:
            answer = parse(text, parsing_timeout=None)
            return 1.0 if answer and verify(gold, answer, timeout_seconds=None) else -1.0
        except Exception:  # noqa: BLE001 - an answer math-verify cannot handle is not a correct answer
            return -1.0
