"""margin: drop pairs whose reward margin is under a threshold (reason `below_margin`), absolute or per-prompt
normalised.

External-margin filtering as in the margin studies of preference data (e.g. "Finding the Sweet Spot", Xiao et
al. 2025; RS-DPO, Khaki et al. 2024, keeps pairs whose reward gap exceeds a threshold). A pair is kept when
m >= min_margin, where, with R the rewards of the prompt's valid responses (ctx.pool: every valid response of
the prompt, paired or not, after pool filters):
- normalize="none":  m = chosen_score - rejected_score;
- normalize="std":   m = (chosen_score - rejected_score) / std(R) (population std, ddof=0 by default, as in
  mu_2sigma; ddof=1 for the sample std): the margin in the prompt's own standard deviations;
- normalize="range": m = (chosen_score - rejected_score) / (max(R) - min(R)), in (0, 1]; the max-min pair is 1.
Normalising puts prompts whose rewards spread differently (easy vs hard prompts, different judges) on one scale.
The valid pool never has a zero-spread prompt (`zero_variance` is dropped before any rule), so both divisors
are > 0; the normalised value is written to a `norm_margin` column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.pairs.selection.common import valid_pool
from pipelines.pairs.selection.removed_pairs import removed_pair_drops


def margin(pairs: pd.DataFrame, ctx=None, min_margin: float = 0.0, normalize: str = "none",
           ddof: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    if normalize not in ("none", "std", "range"):
        raise ValueError(f"margin: normalize must be none|std|range, got {normalize!r}")
    m = pairs["chosen_score"] - pairs["rejected_score"]
    if normalize != "none":
        g = valid_pool(ctx, f"margin with normalize={normalize}").groupby("prompt_id")["reward"]
        scale = g.std(ddof=ddof) if normalize == "std" else g.max() - g.min()
        divisor = pairs["prompt_id"].map(scale).to_numpy(dtype=np.float64)
        if np.isnan(divisor).any():
            raise ValueError(f"margin: prompt {pairs['prompt_id'][np.isnan(divisor)].iloc[0]} is not in the valid pool")
        m = m / divisor
        pairs = pairs.assign(norm_margin=m)
    keep = m >= min_margin
    unit = "" if normalize == "none" else f" ({normalize}-normalised)"
    detail = pd.Series("", index=pairs.index, dtype=object)  # texts only for the removed pairs (millions kept)
    detail[~keep] = [f"margin {v:.6g}{unit} < {min_margin:g}" for v in m[~keep].tolist()]
    return pairs[keep].reset_index(drop=True), removed_pair_drops(pairs, keep, "below_margin", detail, "margin")
