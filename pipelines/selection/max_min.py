"""max_min: the highest-reward response vs the lowest.

The on-policy recipe of RLHFlow ("RLHF Workflow", Dong et al. 2024) and SimPO's on-policy data (Meng et al.
2024): k samples per prompt, chosen = argmax reward, rejected = argmin reward. Ties inside the max (or min) go to
the lower sample_index, so the result is deterministic.
"""

from __future__ import annotations

import pandas as pd

from pipelines.selection.common import can_use_codes, first_per_prompt, first_rows, pairs_from_rows, prompt_codes


def max_min(pool: pd.DataFrame) -> pd.DataFrame:
    if not can_use_codes(pool):  # empty pool or non-numeric columns: the pandas sort path
        best = first_per_prompt(pool, ["reward"], [False]).set_index("prompt_id")
        worst = first_per_prompt(pool, ["reward"], [True]).set_index("prompt_id")
        return pd.DataFrame({"prompt_id": best.index, "chosen_id": best["candidate_id"].to_numpy(),
                             "rejected_id": worst.loc[best.index, "candidate_id"].to_numpy(),
                             "chosen_score": best["reward"].to_numpy(),
                             "rejected_score": worst.loc[best.index, "reward"].to_numpy()})
    codes, uniques = prompt_codes(pool["prompt_id"])
    reward, sample = pool["reward"].to_numpy(), pool["sample_index"].to_numpy()
    best = first_rows(codes, len(uniques), [(reward, False), (sample, True)])
    worst = first_rows(codes, len(uniques), [(reward, True), (sample, True)])
    return pairs_from_rows(pool, best, worst)
