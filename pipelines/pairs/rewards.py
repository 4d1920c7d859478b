"""Scores (long: one row per candidate x scorer) -> one reward per candidate (the weighted sum of scorers).

A candidate with an error from any scorer gets no reward (NaN) and an `error` naming the scorer: selection drops
it with reason `score_error` instead of pretending a number. With normalize="zscore", each scorer is
z-normalised within the prompt first (std 0 -> 0), so scorers on different scales can be summed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def combine(candidates: pd.DataFrame, scores: pd.DataFrame, weights: dict[str, float],
            normalize: str = "none") -> pd.DataFrame:
    """Columns: prompt_id, candidate_id, sample_index, reward, error, and score_<scorer> for each scorer."""
    missing = set(weights) - set(scores["scorer"].unique()) if len(scores) else set(weights)
    if missing and len(candidates):
        raise ValueError(f"no scores from scorer(s) {sorted(missing)}")
    wide = scores.pivot_table(index="candidate_id", columns="scorer", values="score", aggfunc="first", dropna=False)
    err = scores[scores["scorer"].isin(list(weights))].dropna(subset=["error"])
    errors = (err["scorer"] + ": " + err["error"]).groupby(err["candidate_id"]).agg("; ".join)

    out = candidates[["prompt_id", "candidate_id", "sample_index"]].reset_index(drop=True)
    for name in weights:
        out[f"score_{name}"] = out["candidate_id"].map(wide[name]).astype("float64") if name in wide else np.nan
    out["error"] = out["candidate_id"].map(errors).astype(object)
    # a score that is null without an error (scorer wrote no row) is an error too: never silently zero
    no_row = out[[f"score_{n}" for n in weights]].isna().any(axis=1) & out["error"].isna()
    out.loc[no_row, "error"] = "missing score row"

    parts = []
    for name, weight in weights.items():
        col = out[f"score_{name}"]
        if normalize == "zscore":
            g = col.groupby(out["prompt_id"])
            std = g.transform("std", ddof=0)
            col = ((col - g.transform("mean")) / std.where(std > 0)).fillna(0.0).where(col.notna())
        parts.append(weight * col)
    out["reward"] = np.sum(parts, axis=0) if parts else np.nan
    out.loc[out["error"].notna(), "reward"] = np.nan
    return out
