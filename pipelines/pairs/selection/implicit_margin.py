"""Pair filter `implicit_margin`: the DPO implicit reward margin of each pair under a policy and a reference.

DPO's implicit reward is r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) (Rafailov et al. 2023, "Direct Preference
Optimization: Your Language Model is Secretly a Reward Model"), so a pair's implicit margin is

    m = beta * [(log pi(y+|x) - log pi_ref(y+|x)) - (log pi(y-|x) - log pi_ref(y-|x))]

with sequence log-probabilities (sums over the response tokens, TRL's conversational tokenisation; see
policy_stats.py). m > 0: the policy already prefers the chosen response more than the reference does. Used in
iterative DPO, where `policy` is the model trained so far and `reference` the SFT model; with policy ==
reference every m is 0. Kept in the `implicit_margin` column; dual_margin reuses it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.config import EMBEDDED_MODEL
from pipelines.pairs.selection.filter_drops import pair_filter_drops
from pipelines.pairs.selection.policy_stats import load_policy, pair_stats


def implicit_margins(pairs: pd.DataFrame, ctx, policy, reference=EMBEDDED_MODEL, beta: float = 0.1,
                     batch_size: int = 8, device: str = "auto", dtype: str = "auto") -> np.ndarray:
    """beta * (policy - reference) log-ratio margin of every pair (array aligned with the rows)."""
    if policy is None:
        raise ValueError("implicit margin needs a `policy` model (the model being trained); the reference "
                         f"defaults to {EMBEDDED_MODEL}")
    if len(pairs) == 0:
        return np.zeros(0)
    logp = {}
    for role, name in (("policy", policy), ("reference", reference)):
        stats = pair_stats(pairs, ctx, load_policy(name, device, dtype), logps=True, batch_size=batch_size)
        logp[role] = (stats["chosen"]["logp"], stats["rejected"]["logp"])
    (pc, pr), (rc, rr) = logp["policy"], logp["reference"]
    return beta * ((pc - rc) - (pr - rr))


def implicit_margin(pairs: pd.DataFrame, ctx, policy=None, reference=EMBEDDED_MODEL, beta: float = 0.1,
                    min_margin: float | None = 0.0, max_margin: float | None = None, batch_size: int = 8,
                    device: str = "auto", dtype: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep pairs with min_margin <= m <= max_margin (either bound may be None). Default: drop pairs the policy
    gets backwards relative to the reference (m < 0)."""
    pairs = pairs.reset_index(drop=True).assign(
        implicit_margin=implicit_margins(pairs, ctx, policy, reference, beta, batch_size, device, dtype))
    m = pairs["implicit_margin"].to_numpy()
    keep = np.ones(len(m), dtype=bool)
    if min_margin is not None:
        keep &= m >= min_margin
    if max_margin is not None:
        keep &= m <= max_margin
    bounds = f"[{'-inf' if min_margin is None else f'{min_margin:.6g}'}, " \
             f"{'inf' if max_margin is None else f'{max_margin:.6g}'}]"
    details = [f"implicit margin {v:.6g} outside {bounds} (beta {beta:g})" for v in m]
    return pairs[keep].reset_index(drop=True), pair_filter_drops(pairs, keep, "implicit_margin_filtered",
                                                                 details, "implicit_margin")
