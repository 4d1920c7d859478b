"""Pair filter `ches`: drop the pairs most likely to cause likelihood displacement in DPO.

Razin et al. 2024, "Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization"
(arXiv:2410.08847; reference code princeton-nlp/unintentional-unalignment, ches/ches.py). With h+ the sum of
the policy's last-layer hidden states at the positions that predict the chosen tokens (h- for rejected):

    CHES(x, y+, y-)    = <h+, h-> - ||h+||^2
    LN-CHES(x, y+, y-) = <h+, h-> / (|y+| |y-|) - ||h+||^2 / |y+|^2

A high score means the two responses look alike to the model, so pushing y- down drags y+ down with it
(the chosen probability falls during DPO). The paper filters the highest-scoring pairs. Scores are computed
under `model`: in practice the policy about to be trained (default: the embedded SmolLM2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.config import EMBEDDED_MODEL
from pipelines.pairs.selection.filter_drops import pair_filter_drops, top_count
from pipelines.pairs.selection.policy_stats import load_policy, pair_stats


def ches_scores(h_chosen: np.ndarray, h_rejected: np.ndarray, n_chosen: np.ndarray, n_rejected: np.ndarray,
                length_normalize: bool) -> np.ndarray:
    """CHES (or LN-CHES) from summed hidden states (n x d) and response token counts (n)."""
    if length_normalize:
        h_chosen = h_chosen / np.asarray(n_chosen, dtype=np.float64)[:, None]
        h_rejected = h_rejected / np.asarray(n_rejected, dtype=np.float64)[:, None]
    return np.einsum("nd,nd->n", h_chosen, h_rejected) - np.einsum("nd,nd->n", h_chosen, h_chosen)


def score_pairs(pairs: pd.DataFrame, ctx, model=EMBEDDED_MODEL, batch_size: int = 8, device: str = "auto",
                dtype: str = "auto") -> pd.DataFrame:
    """The pairs with two new columns, `ches` and `ln_ches`."""
    policy = load_policy(model, device, dtype)
    stats = pair_stats(pairs, ctx, policy, hidden=True, batch_size=batch_size)
    c, r = stats["chosen"], stats["rejected"]
    return pairs.assign(
        ches=ches_scores(c["hidden_sum"], r["hidden_sum"], c["n_tokens"], r["n_tokens"], False),
        ln_ches=ches_scores(c["hidden_sum"], r["hidden_sum"], c["n_tokens"], r["n_tokens"], True))


def ches(pairs: pd.DataFrame, ctx, score: str = "ln", drop_fraction: float | None = None,
         threshold: float | None = None, model=EMBEDDED_MODEL, batch_size: int = 8, device: str = "auto",
         dtype: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop the top `drop_fraction` of pairs by the score (default 0.1), or every pair above `threshold`.
    score: "ln" (LN-CHES, default) or "raw" (CHES). Both scores stay in the pairs as `ln_ches` and `ches`."""
    if score not in ("ln", "raw"):
        raise ValueError(f"ches score must be 'ln' or 'raw', got {score!r}")
    if drop_fraction is not None and threshold is not None:
        raise ValueError("ches: give drop_fraction or threshold, not both")
    if len(pairs) == 0:
        return pairs.assign(ches=pd.Series(dtype="float64"), ln_ches=pd.Series(dtype="float64")), \
            pair_filter_drops(pairs, np.zeros(0, bool), "ches_filtered", [], "ches")
    scored = score_pairs(pairs, ctx, model, batch_size, device, dtype).reset_index(drop=True)
    column = "ln_ches" if score == "ln" else "ches"
    values = scored[column].to_numpy()
    if threshold is not None:
        keep = ~(values > threshold)
        why = f"above threshold {threshold:.6g}"
    else:
        n_drop = top_count(len(values), 0.1 if drop_fraction is None else drop_fraction)
        order = np.lexsort((np.arange(len(values)), -values))  # highest first; ties: earlier pair first
        keep = np.ones(len(values), dtype=bool)
        keep[order[:n_drop]] = False
        why = f"in the top {n_drop} of {len(values)}"
    details = [f"{column} {v:.6g} {why}" for v in values]
    drops = pair_filter_drops(scored, keep, "ches_filtered", details, "ches")
    return scored[keep].reset_index(drop=True), drops
