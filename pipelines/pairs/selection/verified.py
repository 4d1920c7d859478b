"""verified: correct vs incorrect responses under a verifiable 0/1 score, capped per prompt.

The pair construction of preference training on verifiable tasks (e.g. Iterative Reasoning Preference
Optimization, Pang et al. 2024: winners are responses whose final answer is correct, losers incorrect ones;
RLHFlow's and Tulu 3's math/code on-policy data likewise): correctness decides chosen vs rejected, not the
pooled reward.

- correct = score_<correct_scorer> >= threshold (the `score_<scorer>` column `rewards.combine` writes; the scorer
  must be among the run's scorers, weight 0 is allowed if it should not enter the reward).
- A prompt without a correct response -> drop `no_correct`; all correct -> drop `no_incorrect` (prompt-level
  rows, returned to `select` as this rule's own drops). Note: when the reward IS the 0/1 score alone, such a
  prompt has zero reward variance and `select` drops it as `zero_variance` before any rule runs; the two reasons
  fire when the reward has another term (the default run adds 0.1 x confidence).
- Which pairs, up to `max_pairs_per_prompt` (default 1 here; build_pairs' default config sets the measured 2):
  the correct set C and the incorrect set I are each ordered (pick="reward": C by reward descending, I by reward
  ascending, ties by sample_index, so the first pair is the best correct vs the worst incorrect; pick="random":
  a seeded draw per response, hash(seed, prompt_id, sample_index), batch-independent), then pairs are taken in
  rounds: round r pairs the i-th of C with the ((i + r) mod |I|)-th of I, i ascending. The first min(|C|, |I|)
  pairs use each response at most once; all |C| x |I| pairs come out once if the cap allows.
- chosen_score / rejected_score are the pooled rewards. When the other reward terms can outweigh correctness
  (small weight on the verifier), a pair may have a negative margin (kept: correctness decides) or equal rewards
  (dropped by `select` as `tie`, like every rule's equal-reward pair).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection.common import hash_uniform

COLS = ["prompt_id", "candidate_id", "sample_index", "reward"]


def verified(pool: pd.DataFrame, correct_scorer: str = "math_verify", threshold: float = 1.0,
             max_pairs_per_prompt: int = 1, pick: str = "reward",
             seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    column = f"score_{correct_scorer}"
    if column not in pool:
        have = sorted(c[len("score_"):] for c in pool.columns if c.startswith("score_"))
        raise ValueError(f"verified: no {column!r} in the scored pool (scorers: {have}); add {correct_scorer!r} "
                         "to the run's scorers (weight 0 keeps it out of the reward)")
    if pick not in ("reward", "random"):
        raise ValueError(f"verified: pick must be reward|random, got {pick!r}")
    if max_pairs_per_prompt < 1:
        raise ValueError(f"verified: max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    if pool[column].isna().any():
        bad = pool.loc[pool[column].isna(), "candidate_id"].iloc[0]
        raise ValueError(f"verified: candidate {bad} has a reward but no {column} (a valid response needs it)")

    correct = pool[column] >= threshold
    per_prompt = correct.groupby(pool["prompt_id"]).agg(["sum", "size"])
    none_ok = per_prompt[per_prompt["sum"] == 0]
    all_ok = per_prompt[per_prompt["sum"] == per_prompt["size"]]
    drops = [schema.drop_rows(none_ok.index, "select", "no_correct",
                              [f"0 of {n} valid responses have {column} >= {threshold:g}" for n in none_ok["size"]],
                              rule="verified"),
             schema.drop_rows(all_ok.index, "select", "no_incorrect",
                              [f"all {n} valid responses have {column} >= {threshold:g}" for n in all_ok["size"]],
                              rule="verified")]
    mixed = pool["prompt_id"].isin(per_prompt.index[(per_prompt["sum"] > 0) & (per_prompt["sum"] < per_prompt["size"])])
    rows = pool.loc[mixed, COLS].assign(correct=correct[mixed].to_numpy())
    if pick == "random":
        rows["key"] = hash_uniform("verified", seed, zip(rows["prompt_id"].tolist(), rows["sample_index"].tolist()))
    else:  # C best first, I worst first
        rows["key"] = np.where(rows["correct"], -rows["reward"], rows["reward"])
    rows = rows.sort_values(["prompt_id", "key", "sample_index"], kind="stable")
    rows["rank"] = rows.groupby(["prompt_id", "correct"], sort=False).cumcount()
    good, bad = rows[rows["correct"]], rows[~rows["correct"]]
    both = good.merge(bad.assign(n_bad=bad.groupby("prompt_id")["prompt_id"].transform("size")),
                      on="prompt_id", suffixes=("_c", "_r"))
    both["round"] = (both["rank_r"] - both["rank_c"]) % both["n_bad"]
    both = both.sort_values(["prompt_id", "round", "rank_c"], kind="stable")
    both = both[both.groupby("prompt_id", sort=False).cumcount() < max_pairs_per_prompt]
    pairs = pd.DataFrame({"prompt_id": both["prompt_id"].to_numpy(), "chosen_id": both["candidate_id_c"].to_numpy(),
                          "rejected_id": both["candidate_id_r"].to_numpy(),
                          "chosen_score": both["reward_c"].to_numpy(), "rejected_score": both["reward_r"].to_numpy()})
    drops = [d for d in drops if len(d)]
    return pairs, pd.concat(drops, ignore_index=True) if drops else schema.empty(schema.DROPS)
