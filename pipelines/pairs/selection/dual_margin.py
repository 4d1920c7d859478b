"""Pair filter `dual_margin`: keep the pairs whose margins, from several sources, most agree the pair is clean.

Deng et al. 2025, "Less is More: Improving LLM Alignment via Preference Data Selection" (arXiv:2502.14560):
noisy (small-margin) pairs shrink DPO's parameters, so select by margin; margins from different sources
(the scorers' external margin, the DPO implicit margin) are aggregated as independent evidence:

    p_i = (clip(m_i, L_i, U_i) - L_i) / (U_i - L_i)          (each source's margin mapped to [0, 1])
    p   = prod_i p_i / (prod_i p_i + prod_i (1 - p_i))       (Bayesian aggregation of the sources)

and the top `keep_fraction` by p is kept (reason `low_dual_margin` for the rest).

Defaults for the bounds (ours; set `bounds` to override per source): L_i, U_i = the 5% and 95% quantiles of
m_i over the pairs being filtered, so each source's scale cancels and a few outliers do not squash the rest.
Each p_i is clipped to [1e-6, 1 - 1e-6] so a source at exactly 0 and another at exactly 1 give p = 0.5
(no evidence either way) instead of 0/0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.config import EMBEDDED_MODEL
from pipelines.pairs.selection.filter_drops import pair_filter_drops, top_count
from pipelines.pairs.selection.implicit_margin import implicit_margins

P_EPS = 1e-6
SOURCES = {"external": "margin", "implicit": "implicit_margin"}


def source_probability(m: np.ndarray, lower: float, upper: float) -> np.ndarray:
    if not upper > lower:  # a constant source carries no ranking information
        return np.full(len(m), 0.5)
    return np.clip((np.clip(m, lower, upper) - lower) / (upper - lower), P_EPS, 1.0 - P_EPS)


def aggregate(probabilities: np.ndarray) -> np.ndarray:
    """n x k per-source probabilities -> n aggregated probabilities."""
    yes = np.prod(probabilities, axis=1)
    no = np.prod(1.0 - probabilities, axis=1)
    return yes / (yes + no)


def dual_margin(pairs: pd.DataFrame, ctx, keep_fraction: float = 0.5, sources=("external", "implicit"),
                bounds: dict | None = None, quantiles=(0.05, 0.95), policy=None, reference=EMBEDDED_MODEL,
                beta: float = 0.1, batch_size: int = 8, device: str = "auto",
                dtype: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """sources: any of "external" (the pairs' `margin` column) and "implicit" (the `implicit_margin` column
    when an implicit_margin filter ran before, else computed here from policy/reference).
    bounds: {"external": [L, U], ...}; a source not named uses the `quantiles` of its margins."""
    unknown = set(sources) - set(SOURCES)
    if unknown or not sources:
        raise ValueError(f"dual_margin sources must be a non-empty subset of {sorted(SOURCES)}, got {sources}")
    bounds = dict(bounds or {})
    pairs = pairs.reset_index(drop=True)
    if "implicit" in sources and "implicit_margin" not in pairs:
        pairs = pairs.assign(implicit_margin=implicit_margins(pairs, ctx, policy, reference, beta, batch_size,
                                                              device, dtype))
    columns, used = [], []
    for source in sources:
        m = pairs[SOURCES[source]].to_numpy(dtype=np.float64)
        lower, upper = bounds[source] if source in bounds else \
            (np.quantile(m, quantiles) if len(m) else (0.0, 1.0))
        columns.append(source_probability(m, float(lower), float(upper)))
        used.append(f"{source} in [{float(lower):.4g}, {float(upper):.4g}]")
    p = aggregate(np.stack(columns, axis=1)) if len(pairs) else np.zeros(0)
    pairs = pairs.assign(dual_margin_p=p)
    n_keep = top_count(len(p), keep_fraction)
    order = np.lexsort((np.arange(len(p)), -p))  # highest p first; ties: earlier pair first
    keep = np.zeros(len(p), dtype=bool)
    keep[order[:n_keep]] = True
    details = [f"p {v:.4g} not in the top {n_keep} of {len(p)} ({'; '.join(used)})" for v in p]
    return pairs[keep].reset_index(drop=True), pair_filter_drops(pairs, keep, "low_dual_margin", details,
                                                                 "dual_margin")
