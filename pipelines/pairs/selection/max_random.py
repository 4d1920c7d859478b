"""max_random: the highest-reward response vs a uniformly random other response of the same prompt.

The on-policy preference recipe of open-instruct / Tulu 3 (Lambert et al., 2024): chosen = argmax reward,
rejected = one of the remaining responses drawn uniformly. The draw is seeded per prompt with
hash(seed, prompt_id) (like `stages.prompt_seed`), so a prompt gets the same pair whatever batch it is in.
A drawn rejected with the chosen's reward is a tie and `select` drops it (reason `tie`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import ids
from pipelines.pairs.selection.common import first_per_prompt


def max_random(pool: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    best = first_per_prompt(pool, ["reward"], [False])
    rest = pool[~pool["candidate_id"].isin(best["candidate_id"])]
    rest = rest.sort_values(["prompt_id", "sample_index"], kind="stable")
    sizes = rest.groupby("prompt_id", sort=True).size()
    # one uniform per prompt from a content hash: deterministic, independent of batch composition
    u = np.array([int(ids.stable_hash("max_random", seed, p), 16) / 16.0**16 for p in sizes.index])
    pick = (u * sizes.to_numpy()).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes.to_numpy())[:-1]])
    rejected = rest.iloc[offsets + pick].set_index("prompt_id")
    best = best.set_index("prompt_id").loc[rejected.index]
    return pd.DataFrame({"prompt_id": rejected.index, "chosen_id": best["candidate_id"].to_numpy(),
                         "rejected_id": rejected["candidate_id"].to_numpy(),
                         "chosen_score": best["reward"].to_numpy(),
                         "rejected_score": rejected["reward"].to_numpy()})
