"""Drop rows for the pairs a pair filter removes (nothing leaves without a reason).

- a prompt left with no pair: one prompt-level row (candidate_id null), its removed pairs in the detail;
- a removed pair of a prompt that keeps other pairs: one candidate-level row, on the pair's rejected
  candidate unless only its chosen one is now unused by the kept pairs (DROPS has no pair column, so the
  detail names the pair).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema


def pair_filter_drops(pairs: pd.DataFrame, keep: np.ndarray, reason: str, details: list[str],
                      rule: str) -> pd.DataFrame:
    keep = np.asarray(keep, dtype=bool)
    removed = pairs[~keep].assign(_detail=[d for d, k in zip(details, keep) if not k])
    if removed.empty:
        return schema.empty(schema.DROPS)
    removed = removed.assign(_detail=[f"pair {c} > {r}: {d}" for c, r, d in
                                      zip(removed["chosen_id"], removed["rejected_id"], removed["_detail"])])
    still_paired = set(pairs.loc[keep, "prompt_id"])
    gone = removed[~removed["prompt_id"].isin(still_paired)]
    partial = removed[removed["prompt_id"].isin(still_paired)]
    parts = []
    if len(gone):
        per_prompt = gone.groupby("prompt_id", sort=False)["_detail"].agg("; ".join)
        parts.append(schema.drop_rows(per_prompt.index, "filter", reason, per_prompt.to_list(), rule=rule))
    if len(partial):
        kept = pairs[keep]
        used = set(kept["chosen_id"]) | set(kept["rejected_id"])
        blamed = [c if (r in used and c not in used) else r
                  for c, r in zip(partial["chosen_id"], partial["rejected_id"])]
        parts.append(schema.drop_rows(partial["prompt_id"], "filter", reason, partial["_detail"].to_list(),
                                      rule=rule, candidate_ids=blamed))
    return pd.concat(parts, ignore_index=True)


def top_count(n: int, fraction: float) -> int:
    """How many of n items a fraction names: floor, with a tolerance for float noise (0.3 * 10 -> 3)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return int(np.floor(fraction * n + 1e-9))
