"""The terminal reward of the step search: the math-verify scorer's check of an answer text, as +1 / -1.

It is `scorers.math_verify_scorer.check_answer` against the reference parsed as `$...$`, exactly what the
`math_verify` scorer does. A text without a parseable answer is wrong (-1), and so is one math-verify cannot
handle; a reference that does not parse is an error.
"""

from __future__ import annotations

from scorers.math_verify_scorer import check_answer, parse_reference


class MathOutcome:
    def __init__(self):
        self._gold: dict[str, object] = {}

    def __call__(self, text: str, reference: str) -> float:
        if reference not in self._gold:
            self._gold[reference] = parse_reference(reference)
        try:
            correct, _ = check_answer(text, self._gold[reference])
        except Exception:  # noqa: BLE001 - an answer math-verify cannot handle is not a correct answer
            return -1.0
        return 1.0 if correct else -1.0
