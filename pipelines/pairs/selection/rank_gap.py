"""rank_gap: curriculum tiers by the rank gap of chosen and rejected within the prompt's ranking; drops nothing.

Curriculum DPO (Croitoru et al., 2024, "Curriculum Direct Preference Optimization for Diffusion and Consistency
Models", arXiv:2405.13637; the same scheme is used for text): rank a prompt's samples by reward; a pair whose
two samples are far apart in the ranking is easy, one of neighbours is hard; training runs the pairs in batches
from easy to hard. Unlike `curry_tiers` (the reward gap), the rank gap ignores the reward scale.

Definitions (n = the prompt's valid responses, from ctx.pool, the pool the rule ranked):
- gap(c, r) = #{responses whose reward lies in [min(R_c, R_r), max(R_c, R_r)]} - 1. Without ties it is the
  difference of the two ranks (1 = neighbours, n-1 = best vs worst); responses tied with either end count as
  in between, so equal rewards never make a pair look harder or easier by sample order.
- tier = floor((n - 1 - gap) * n_tiers / (n - 1)): the n-1 possible gaps split into n_tiers equal buckets,
  tier 0 = the largest gaps (easiest), trained first. k=2: one gap (1), always tier 0. n_tiers=3, n=4:
  gap 3 -> 0, gap 2 -> 1, gap 1 -> 2. n_tiers=3, n=10: gaps 9-7 -> 0, 6-4 -> 1, 3-1 -> 2.
The pairs get a `rank_gap` column as well. Works with any rule (all_ranked gives every gap).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection.common import valid_pool


def rank_gap(pairs: pd.DataFrame, ctx, n_tiers: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    if int(n_tiers) != n_tiers or n_tiers < 1:
        raise ValueError(f"rank_gap: n_tiers must be a positive integer, got {n_tiers!r}")
    pool = valid_pool(ctx, "rank_gap")
    out = pairs.reset_index(drop=True)
    # one sorted integer key per pool row: (prompt code, dense rank of the reward among all rewards)
    code, prompts = pd.factorize(pool["prompt_id"].to_numpy(dtype=object))
    values, level = np.unique(pool["reward"].to_numpy(dtype=np.float64), return_inverse=True)
    stride = len(values) + 1
    keys = np.sort(code.astype(np.int64) * stride + level)
    ids = pd.Index(pool["candidate_id"].to_numpy(dtype=object))
    c = ids.get_indexer(out["chosen_id"].to_numpy(dtype=object))
    r = ids.get_indexer(out["rejected_id"].to_numpy(dtype=object))
    if (c < 0).any() or (r < 0).any():
        bad = np.flatnonzero((c < 0) | (r < 0))[0]
        raise ValueError(f"rank_gap: pair {out['chosen_id'].iloc[bad]} > {out['rejected_id'].iloc[bad]} is not in "
                         "the valid pool")
    base = code[c].astype(np.int64) * stride
    lo, hi = np.minimum(level[c], level[r]), np.maximum(level[c], level[r])
    gap = np.searchsorted(keys, base + hi, "right") - np.searchsorted(keys, base + lo, "left") - 1
    n = np.bincount(code, minlength=len(prompts))[code[c]]
    out["rank_gap"] = gap.astype("int32")
    out["tier"] = ((n - 1 - gap) * int(n_tiers) // np.maximum(n - 1, 1)).astype("int32")
    return out, schema.empty(schema.DROPS)
