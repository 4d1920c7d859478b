"""all_ranked: several pairs per prompt from the reward ranking.

- mode="best_vs_rest" (Curry-DPO, Pattnaik et al. 2024): (R1, Rj) for every other response Rj, R1 the best;
- mode="all" (RS-DPO, Khaki et al. 2024): every (i, j) with reward_i - reward_j > min_gap.
Pairs need a gap > max(min_gap, 1e-12) (equal rewards teach nothing; unused responses become not_selected).
max_pairs_per_prompt keeps the largest gaps (ties: chosen then rejected sample_index).
"""

from __future__ import annotations

import pandas as pd

from pipelines.pairs.selection.common import EPS, first_per_prompt


def all_ranked(pool: pd.DataFrame, mode: str = "best_vs_rest", min_gap: float = 0.0,
               max_pairs_per_prompt: int | None = None) -> pd.DataFrame:
    if mode not in ("best_vs_rest", "all"):
        raise ValueError(f"unknown mode {mode!r}; known: best_vs_rest, all")
    cols = ["prompt_id", "candidate_id", "sample_index", "reward"]
    left = first_per_prompt(pool, ["reward"], [False])[cols] if mode == "best_vs_rest" else pool[cols]
    both = left.merge(pool[cols], on="prompt_id", suffixes=("_c", "_r"))
    gap = both["reward_c"] - both["reward_r"]
    both = both[gap > max(min_gap, EPS)].assign(gap=gap)
    both = both.sort_values(["prompt_id", "gap", "sample_index_c", "sample_index_r"],
                            ascending=[True, False, True, True], kind="stable")
    if max_pairs_per_prompt is not None:
        both = both[both.groupby("prompt_id").cumcount() < max_pairs_per_prompt]
    return pd.DataFrame({"prompt_id": both["prompt_id"].to_numpy(), "chosen_id": both["candidate_id_c"].to_numpy(),
                         "rejected_id": both["candidate_id_r"].to_numpy(),
                         "chosen_score": both["reward_c"].to_numpy(), "rejected_score": both["reward_r"].to_numpy()})
