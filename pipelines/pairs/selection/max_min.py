"""max_min: the highest-reward response vs the lowest.

The on-policy recipe of RLHFlow ("RLHF Workflow", Dong et al. 2024) and SimPO's on-policy data (Meng et al.
2024): k samples per prompt, chosen = argmax reward, rejected = argmin reward. Ties inside the max (or min) go to
the lower sample_index, so the result is deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.pairs.selection.grouped import groups_of, pairs_from_rows


def max_min(pool: pd.DataFrame) -> pd.DataFrame:
    groups = groups_of(pool["prompt_id"])
    reward, sample = pool["reward"].to_numpy(dtype=np.float64), pool["sample_index"].to_numpy()
    best = groups.extreme_rows(reward, lowest=False, sample=sample)
    worst = groups.extreme_rows(reward, lowest=True, sample=sample)
    return pairs_from_rows(pool, groups, best, worst)
