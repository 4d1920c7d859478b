"""curry_tiers: curriculum tiers by score gap, largest (easiest) first; drops nothing.

Curry-DPO (Pattnaik et al., 2024) trains on the pairs of each prompt in order of decreasing reward gap.
scope="prompt": the pairs of a prompt ranked by margin (descending) and split into n_tiers equal parts,
tier = floor(rank * n_tiers / n_pairs_of_prompt); scope="global": the same over all pairs of the run.
Ties keep the incoming order (stable sort). Training runs tier 0 first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema


def curry_tiers(pairs: pd.DataFrame, ctx=None, n_tiers: int = 3,
                scope: str = "prompt") -> tuple[pd.DataFrame, pd.DataFrame]:
    if scope not in ("prompt", "global"):
        raise ValueError(f"unknown scope {scope!r}; known: prompt, global")
    out = pairs.reset_index(drop=True)
    m = out["chosen_score"] - out["rejected_score"]
    if scope == "global":
        order = np.argsort(-m.to_numpy(), kind="stable")
        rank = np.empty(len(out), dtype=np.int64)
        rank[order] = np.arange(len(out))
        size = np.full(len(out), len(out))
    else:
        ranked = out.assign(m=m).sort_values("m", ascending=False, kind="stable")
        rank = ranked.groupby("prompt_id").cumcount().reindex(out.index).to_numpy()
        size = out.groupby("prompt_id")["prompt_id"].transform("size").to_numpy()
    out["tier"] = (rank * n_tiers // np.maximum(size, 1)).astype("int32")
    return out, schema.empty(schema.DROPS)
