"""length: length control for pairs whose chosen is much longer than its rejected.

Reward models and DPO favour longer answers; iLR-DPO (Liu et al., 2024, "Iterative Length-Regularized DPO")
and DICE (Chen et al., 2024, length-regularised reward shaping) counter it. This data-side version computes
ratio = len(chosen) / len(rejected) (unit "chars" of the text or "tokens" = completion_tokens from
ctx.candidates; a zero length counts as 1) and, for pairs with ratio > max_ratio:
- mode="drop": removes the pair (reason `length_ratio`);
- mode="weight": keeps it with weight *= max_ratio / ratio (drops nothing).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection.removed_pairs import removed_pair_drops


def length(pairs: pd.DataFrame, ctx, max_ratio: float = 1.5, unit: str = "chars",
           mode: str = "drop") -> tuple[pd.DataFrame, pd.DataFrame]:
    if unit not in ("chars", "tokens") or mode not in ("drop", "weight"):
        raise ValueError(f"length: unit must be chars|tokens and mode drop|weight, got {unit!r}, {mode!r}")
    if ctx is None or ctx.candidates is None:
        raise ValueError("length needs the SelectionContext (candidate texts and token counts)")
    c = ctx.candidates.set_index("candidate_id")
    size = c["text"].str.len() if unit == "chars" else c["completion_tokens"]
    size = size.astype("float64").clip(lower=1.0)
    ratio = pairs["chosen_id"].map(size).to_numpy() / pairs["rejected_id"].map(size).to_numpy()
    over = pd.Series(ratio > max_ratio, index=pairs.index)
    if mode == "weight":
        out = pairs.copy()
        out["weight"] = out["weight"] * np.where(over, max_ratio / ratio, 1.0)
        return out, schema.empty(schema.DROPS)
    detail = pd.Series([f"chosen/rejected length {r:.3g} > {max_ratio:g} ({unit})" for r in ratio], index=pairs.index)
    return pairs[~over].reset_index(drop=True), removed_pair_drops(pairs, ~over, "length_ratio", detail, "length")
