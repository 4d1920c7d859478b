"""Drop rows for pairs a pair filter removed, so nothing leaves without a reason.

- a prompt that lost all its pairs: one prompt-level row (the contract `common.check_accounted` enforces);
- a candidate that was in a removed pair and is in no surviving pair of a still-paired prompt: one candidate row.
"""

from __future__ import annotations

import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection.common import isin


def removed_pair_drops(before: pd.DataFrame, keep: pd.Series, reason: str, detail: pd.Series,
                       name: str) -> pd.DataFrame:
    """before: pairs going in; keep: boolean mask over them; detail: one text per pair (why it went)."""
    removed, after = before[~keep], before[keep]
    if removed.empty:
        return schema.empty(schema.DROPS)
    detail = detail[~keep]
    gone = ~isin(removed["prompt_id"], after["prompt_id"])  # common.isin: pandas' arrow-string isin is per-scalar
    first = removed[gone].drop_duplicates("prompt_id")
    parts = [schema.drop_rows(first["prompt_id"], "filter", reason, detail.loc[first.index], rule=name)]
    used = set(after["chosen_id"].to_numpy(dtype=object)) | set(after["rejected_id"].to_numpy(dtype=object))
    partial = removed[~gone]
    rows = pd.concat([
        pd.DataFrame({"prompt_id": partial["prompt_id"], "candidate_id": partial[col], "detail": detail[~gone]})
        for col in ("chosen_id", "rejected_id")])
    rows = rows[~isin(rows["candidate_id"], list(used))].drop_duplicates("candidate_id")
    if len(rows):
        parts.append(schema.drop_rows(rows["prompt_id"], "filter", reason, rows["detail"], rule=name,
                                      candidate_ids=rows["candidate_id"]))
    return pd.concat(parts, ignore_index=True)
