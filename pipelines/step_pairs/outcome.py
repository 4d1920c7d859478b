"""The terminal reward of the step search: the math-verify scorer's check of an answer text, as +1 / -1.

It is the `math_verify` scorer's check (scorers/math_verify_pool.py: the reference parsed as `$...$`, math-verify
in a worker process with a hard deadline). A text without a parseable answer is wrong (-1), and so is one
math-verify cannot handle or does not finish within `timeout_s` (counted in `timeouts`, which the build reports
as `outcome_timeouts`); a reference that does not parse is an error.
"""

from __future__ import annotations

from scorers.math_verify_pool import DEFAULT_TIMEOUT_S, shared_pool


class MathOutcome:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.pool = shared_pool(timeout_s)
        self.timeouts = 0

    def __call__(self, text: str, reference: str) -> float:
        outcome, = self.pool.check([(text, reference, False)])
        if "error" in outcome:
            if outcome["reason"] == "timeout":
                self.timeouts += 1
            elif outcome["error"].endswith(f"reference {reference!r} does not parse"):
                raise ValueError(outcome["error"].removeprefix("math-verify: ValueError: "))
            return -1.0
        return 1.0 if outcome["correct"] else -1.0
