"""mu_2sigma: chosen = the best response, rejected = the one whose reward is nearest mu - 2 sigma.

"Finding the Sweet Spot: Preference Data Construction for Scaling Preference Optimization" (Xiao et al., 2025):
model the k rewards of a prompt as N(mu, sigma^2) and pick responses at points of that distribution; of the
points {min, mu-2s, mu-s, mu, mu+s, mu+2s, max}, chosen = max and rejected = mu-2sigma trained best.

- sigma is the population std (ddof=0) by default, as numpy computes it; ddof=1 gives the sample std. With small
  k the two differ (k=4: sample sigma is 1.15x the population one) and mu-2sigma often falls below the minimum,
  in which case the nearest response IS the minimum and the rule equals max_min.
- `chosen_point`/`rejected_point` take any of the 7 points; chosen is picked first, rejected from the rest.
- Nearest-point ties: chosen prefers the higher reward, rejected the lower one, then the lower sample_index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.pairs.selection.grouped import groups_of, pairs_from_rows

POINTS = {
    "min": lambda s: s["rmin"], "mu-2sigma": lambda s: s["mu"] - 2 * s["sigma"],
    "mu-sigma": lambda s: s["mu"] - s["sigma"], "mu": lambda s: s["mu"], "mu+sigma": lambda s: s["mu"] + s["sigma"],
    "mu+2sigma": lambda s: s["mu"] + 2 * s["sigma"], "max": lambda s: s["rmax"],
}


def mu_2sigma(pool: pd.DataFrame, chosen_point: str = "max", rejected_point: str = "mu-2sigma",
              ddof: int = 0) -> pd.DataFrame:
    for p in (chosen_point, rejected_point):
        if p not in POINTS:
            raise ValueError(f"unknown point {p!r}; known: {list(POINTS)}")
    if list(POINTS).index(chosen_point) <= list(POINTS).index(rejected_point):
        raise ValueError(f"chosen_point {chosen_point!r} must lie above rejected_point {rejected_point!r}")
    groups = groups_of(pool["prompt_id"])
    reward, sample = pool["reward"].to_numpy(dtype=np.float64), pool["sample_index"].to_numpy()
    s = groups.stats(reward, ddof, extremes={"min", "max"} & {chosen_point, rejected_point} != set())

    def nearest(point: str, higher: bool) -> list:
        """Sort keys: distance to the point, then the higher (lower) reward, then the lower sample_index. The
        nearest to the max IS the highest reward (to the min the lowest): no distances to compute for those."""
        if point in ("min", "max"):
            return [(reward, point == "min"), (sample, True)]
        return [(np.abs(reward - groups.broadcast(POINTS[point](s))), True), (reward, not higher), (sample, True)]

    # the max (nearest to itself) is the highest reward, ties to the lower sample_index
    chosen = groups.extreme_rows(reward, lowest=False, sample=sample) if chosen_point == "max" else \
        groups.first(nearest(chosen_point, higher=True))
    rest = np.ones(len(pool), dtype=bool)
    rest[chosen[chosen >= 0]] = False  # rejected is picked from the other responses
    rejected = groups.first(nearest(rejected_point, higher=False), alive=rest)
    return pairs_from_rows(pool, groups, chosen, rejected)
