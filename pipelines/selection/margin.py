"""margin: drop pairs whose reward margin is under an absolute threshold (reason `below_margin`).

External-margin filtering as in the margin studies of preference data (e.g. "Finding the Sweet Spot", Xiao et
al. 2025; RS-DPO, Khaki et al. 2024, keeps pairs whose reward gap exceeds a threshold). A pair is kept when
margin >= min_margin. The per-prompt-normalised margin (margin / prompt reward std) is NOT built yet: it needs
the valid pool, which SelectionContext does not carry.
"""

from __future__ import annotations

import pandas as pd

from pipelines.selection.removed_pairs import removed_pair_drops


def margin(pairs: pd.DataFrame, ctx=None, min_margin: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = pairs["chosen_score"] - pairs["rejected_score"]
    keep = m >= min_margin
    detail = m.map(lambda v: f"margin {v:.6g} < {min_margin:g}")
    return pairs[keep].reset_index(drop=True), removed_pair_drops(pairs, keep, "below_margin", detail, "margin")
