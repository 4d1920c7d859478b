"""dstc: minimax selection over a self-generated pass matrix, and DSTC's test-code concatenation.

After "DSTC: Direct Preference Learning with Only Self-Generated Tests and Code" (Liu et al. 2024). With the
`dstc` scorer (scorers/dstc.py) as the reward, a candidate's reward is its (weighted) share of the prompt's
self-generated tests it passes, so:
- chosen   = a program passing the most tests (ties: lower sample_index),
- rejected = a program passing the fewest.
Prompts where every program passes the same weighted share are dropped before the rule (zero_variance).

Concatenation (our reading of DSTC's "test-code concatenation"): the chosen response becomes chosen code + the
test the chosen program passes that the most programs pass (the most trusted test); the rejected response
becomes rejected code + the test the rejected program fails that the fewest programs pass (the most doubtful).
It needs the scores' details, which a rule does not see, so it runs on a finished run directory:

    python -m pipelines.selection.dstc runs/<run_id>     # writes pairs_dstc_concat.parquet next to pairs.parquet
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from pipelines.selection.max_min import max_min


def dstc(pool: pd.DataFrame) -> pd.DataFrame:
    """Most-passed vs least-passed program: max_min over the dstc reward."""
    return max_min(pool)


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


def main(argv: list[str] | None = None) -> int:
    from pipelines import io, schema
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m pipelines.selection.dstc RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    pairs = io.read_table(run_dir / "pairs.parquet", schema.PAIRS)
    scores = io.read_table(run_dir / "scores.parquet", schema.SCORES)
    out, unchanged = concatenate(pairs, scores)
    io.write_table(out, run_dir / "pairs_dstc_concat.parquet", schema.PAIRS)
    print(f"{len(out)} pairs -> {run_dir / 'pairs_dstc_concat.parquet'} ({unchanged} without a test to append)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
