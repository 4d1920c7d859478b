"""DSTC's test-code concatenation, inside build_pairs (`selection: {rule: dstc, dstc_concat: true}`).

After "DSTC: Direct Preference Learning with Only Self-Generated Tests and Code" (Liu et al. 2024), our reading of
its "test-code concatenation": the chosen response becomes chosen code + the test the chosen program passes that
the most programs pass (the most trusted test); the rejected response becomes rejected code + the test the
rejected program fails that the fewest programs pass (the most doubtful). It reads the `dstc` scorer's details
(the pass matrix row, the tests and their pass counts), so it runs in finalize, after the rule.
"""

from __future__ import annotations

import json

import pandas as pd


def _pick_test(details: dict, passing: bool) -> str | None:
    """The chosen side's most-passed passing test, or the rejected side's least-passed failing test."""
    options = [(count, j) for j, (ok, count) in enumerate(zip(details["passed"], details["test_pass_counts"]))
               if ok == passing]
    if not options:
        return None
    count, j = max(options) if passing else min(options)
    return details["tests"][j]


def _with_test(messages, test: str) -> list[dict]:
    messages = [dict(m) for m in messages]
    messages[-1]["content"] = messages[-1]["content"].rstrip() + f"\n\n```python\n{test}\n```"
    return messages


def concatenate(pairs: pd.DataFrame, scores: pd.DataFrame, scorer: str = "dstc") -> tuple[pd.DataFrame, int]:
    """(pairs with tests appended to chosen and rejected, number of pairs left unchanged: no test to pick)."""
    rows = scores[(scores["scorer"] == scorer) & scores["details"].notna()]
    if rows.empty and len(pairs):
        raise ValueError(f"no {scorer!r} score details: concatenation needs a run scored by the dstc scorer")
    details = {cid: json.loads(d) for cid, d in zip(rows["candidate_id"], rows["details"])}
    out, unchanged = pairs.copy(), 0
    for i, (c, r) in enumerate(zip(pairs["chosen_id"], pairs["rejected_id"])):
        good = _pick_test(details[c], True) if c in details else None
        bad = _pick_test(details[r], False) if r in details else None
        if good is None or bad is None:
            unchanged += 1
            continue
        out.at[out.index[i], "chosen"] = _with_test(pairs["chosen"].iloc[i], good)
        out.at[out.index[i], "rejected"] = _with_test(pairs["rejected"].iloc[i], bad)
    return out, unchanged
