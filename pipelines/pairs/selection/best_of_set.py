"""best_of_set: every (above-mean, below-mean) pair of a prompt, weighted by how far both lie from the mean.

Multi-Preference Optimization (MPO, first published as SWEPO; Gupta, Madhavan, Zhang, Natarajan, Bansal,
Rajmohan, 2024, "Multi-Preference Optimization: Generalizing DPO via Set-Level Contrasts", arXiv:2412.04628):
split a prompt's k responses into a chosen set (reward above the prompt's mean) and a rejected set (below it)
and contrast the two sets in one loss, weighting each response by its deviation from the mean reward, so the
clear outliers (much better or much worse than average) count most.

DPO trainers take pairs, so the set contrast is written as one row per (chosen, rejected) pair with a `weight`:

    d_y     = reward_y - mean(rewards of the prompt's valid responses)
    chosen  = {y : d_y > 1e-12},  rejected = {y : d_y < -1e-12}   (a response at the mean is in neither set:
                                                                    `not_selected`)
    raw_ij  = |d_i|^power * |d_j|^power                            (power=0: uniform weights)
    weight  = raw_ij / mean(raw of the prompt's kept pairs)         (weight_norm="mean": a prompt's pairs
                                                                     average 1, the scale of every other rule)
            = raw_ij / sum(raw ...)                                 (weight_norm="sum": a prompt's pairs sum to 1,
                                                                     so each prompt counts once, like one MPO
                                                                     loss term)

Why this weighting: the papers' abstracts fix the principle (weights grow with |reward - mean|, emphasising the
outliers); we could not read the full text here to copy its exact weighting function, so we use the power of the
absolute deviation (linear by default) and give a pair the product of its two responses' weights: in the set
loss each response's weight multiplies its own term, so a pair's share of the contrast scales with both. The
weights are relative within a prompt (MPO's loss is per prompt), hence the per-prompt normalisation.

max_pairs_per_prompt keeps the heaviest pairs (ties: chosen then rejected sample_index), normalised after the cap.
Every valid prompt has both sets (zero-variance prompts are dropped before any rule runs).
"""

from __future__ import annotations

import pandas as pd

from pipelines.pairs.selection.common import EPS

COLS = ["prompt_id", "candidate_id", "sample_index", "reward"]


def best_of_set(pool: pd.DataFrame, power: float = 1.0, max_pairs_per_prompt: int | None = None,
                weight_norm: str = "mean") -> pd.DataFrame:
    if weight_norm not in ("mean", "sum"):
        raise ValueError(f"best_of_set: weight_norm must be mean|sum, got {weight_norm!r}")
    if power < 0:
        raise ValueError(f"best_of_set: power must be >= 0, got {power}")
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"best_of_set: max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    d = pool["reward"] - pool.groupby("prompt_id")["reward"].transform("mean")
    strength = d.abs() ** power
    above = pool.loc[d > EPS, COLS].assign(w=strength[d > EPS])
    below = pool.loc[d < -EPS, COLS].assign(w=strength[d < -EPS])
    both = above.merge(below, on="prompt_id", suffixes=("_c", "_r"))
    both = both.assign(raw=both["w_c"] * both["w_r"])
    both = both.sort_values(["prompt_id", "raw", "sample_index_c", "sample_index_r"],
                            ascending=[True, False, True, True], kind="stable")
    if max_pairs_per_prompt is not None:
        both = both[both.groupby("prompt_id", sort=False).cumcount() < max_pairs_per_prompt]
    scale = both.groupby("prompt_id", sort=False)["raw"].transform(weight_norm)
    return pd.DataFrame({"prompt_id": both["prompt_id"].to_numpy(), "chosen_id": both["candidate_id_c"].to_numpy(),
                         "rejected_id": both["candidate_id_r"].to_numpy(),
                         "chosen_score": both["reward_c"].to_numpy(), "rejected_score": both["reward_r"].to_numpy(),
                         "weight": (both["raw"] / scale).to_numpy()})
