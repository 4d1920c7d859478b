"""sweet_spot_min5: chosen = the best response, rejected = the lowest of `n_samples` (5) responses drawn at random
from the rest.

The scalable construction of "Finding the Sweet Spot: Preference Data Construction for Scaling Preference
Optimization" (Xiao et al., 2025, ACL; arXiv:2502.16825): when k grows, max-vs-min pairs hurt DPO and the best
rejected sits near mu - 2 sigma (the `mu_2sigma` rule); instead of estimating mu and sigma, the rejected is the
minimum of a small random subset, which stays away from the extreme tail however large k is. (For reference: the
expected minimum of 5 draws from N(mu, sigma^2) is about mu - 1.16 sigma.)

- The draw is without replacement, among the responses other than the chosen one, seeded per prompt: each
  response gets a uniform from hash(seed, prompt_id, sample_index) (`common.hash_uniform`) and the `n_samples`
  smallest are drawn, so a prompt gets the same pair whatever batch it is in.
- Fewer than `n_samples` others (small k): all of them are drawn and the rule equals max_min.
- Ties: the chosen is the lowest sample_index among the max, the rejected the lowest sample_index among the
  drawn minimum. A drawn minimum equal to the chosen's reward is a tie and `select` drops it (reason `tie`).
"""

from __future__ import annotations

import pandas as pd

from pipelines.pairs.selection.common import first_per_prompt, hash_uniform, isin


def sweet_spot_min5(pool: pd.DataFrame, n_samples: int = 5, seed: int = 0) -> pd.DataFrame:
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"sweet_spot_min5: n_samples must be a positive integer, got {n_samples!r}")
    best = first_per_prompt(pool, ["reward"], [False])
    rest = pool[~isin(pool["candidate_id"], best["candidate_id"])]
    u = hash_uniform("sweet_spot_min5", seed, zip(rest["prompt_id"].tolist(), rest["sample_index"].tolist()))
    drawn = rest.assign(_draw=u).sort_values(["prompt_id", "_draw"], kind="stable")
    drawn = drawn[drawn.groupby("prompt_id", sort=False).cumcount() < int(n_samples)]
    rejected = first_per_prompt(drawn, ["reward"], [True]).set_index("prompt_id")
    best = best.set_index("prompt_id").loc[rejected.index]
    return pd.DataFrame({"prompt_id": rejected.index, "chosen_id": best["candidate_id"].to_numpy(),
                         "rejected_id": rejected["candidate_id"].to_numpy(),
                         "chosen_score": best["reward"].to_numpy(),
                         "rejected_score": rejected["reward"].to_numpy()})
