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
import pyarrow as pa

from pipelines.core import schema
from pipelines.pairs.selection.common import hash_uniform
from pipelines.pairs.selection.details import ints_to_str, join
from pipelines.pairs.selection.grouped import ROW_COLUMNS, _arrow, groups_of


def verified(pool: pd.DataFrame, correct_scorer: str = "math_verify", threshold: float = 1.0,
             max_pairs_per_prompt: int = 1, pick: str = "reward",
             seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """On integer prompt codes (grouped.Groups): one sort of the mixed prompts' rows and the pairs' positions
    computed, not enumerated: the t-th pair of a prompt with a correct and b incorrect responses is round t // a,
    correct i = t % a, incorrect (i + t // a) mod b (the order the rounds define), so no a x b product is built."""
    column = f"score_{correct_scorer}"
    if column not in pool:
        have = sorted(c[len("score_"):] for c in pool.columns if c.startswith("score_"))
        raise ValueError(f"verified: no {column!r} in the scored pool (scorers: {have}); add {correct_scorer!r} "
                         "to the run's scorers (weight 0 keeps it out of the reward)")
    if pick not in ("reward", "random"):
        raise ValueError(f"verified: pick must be reward|random, got {pick!r}")
    if max_pairs_per_prompt < 1:
        raise ValueError(f"verified: max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    score = pool[column].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(score).any():
        bad = pool["candidate_id"].iloc[int(np.flatnonzero(np.isnan(score))[0])]
        raise ValueError(f"verified: candidate {bad} has a reward but no {column} (a valid response needs it)")

    groups = groups_of(pool["prompt_id"])
    correct = score >= threshold
    n_correct, size = groups.count(correct), groups.count()
    order = groups.order  # prompts in prompt_id order, as a groupby gives them
    ordered_correct, ordered_size = n_correct[order], size[order]
    drops = []
    for reason, prompts, text in (
            ("no_correct", ordered_correct == 0, ("0 of ", " valid responses have")),
            ("no_incorrect", ordered_correct == ordered_size, ("all ", " valid responses have"))):
        at = order[prompts]
        if len(at):
            detail = join(text[0], ints_to_str(size[at]), f"{text[1]} {column} >= {threshold:g}")
            drops.append(schema.drop_rows(groups.ids.take(pa.array(at)), "select", reason, detail, rule="verified"))

    mixed_group = (n_correct > 0) & (n_correct < size)
    mixed = order[mixed_group[order]]  # the prompts with pairs, in prompt_id order
    reward = pool["reward"].to_numpy(dtype=np.float64)
    sample = pool["sample_index"].to_numpy()
    k = groups.uniform_run(sample)
    if k:  # every prompt k consecutive rows in sample_index order: the mixed ones' blocks, in prompt_id order
        rows = (groups.starts[mixed][:, None] + np.arange(k)).ravel()
    else:
        rows = np.flatnonzero(groups.broadcast(mixed_group))
    if pick == "random":
        key = hash_uniform("verified", seed, zip(pool["prompt_id"].to_numpy()[rows].tolist(),
                                                 sample[rows].tolist()))
    else:  # C best first, I worst first
        key = np.where(correct[rows], -reward[rows], reward[rows])
    # each mixed prompt's correct rows (by key, then sample_index), then its incorrect ones
    if k:  # a sort inside each block of k (lexsort is stable: ties keep the block's sample_index order)
        within = np.lexsort((key.reshape(-1, k), ~correct[rows].reshape(-1, k)), axis=1)
        rows = np.take_along_axis(rows.reshape(-1, k), within, axis=1).ravel()
    else:
        rank_of_group = np.empty(groups.n, dtype=np.intp)
        rank_of_group[order] = np.arange(groups.n)
        rows = rows[np.lexsort((sample[rows], key, ~correct[rows], rank_of_group[groups.codes[rows]]))]
    a, b = n_correct[mixed], size[mixed] - n_correct[mixed]
    n_pairs = np.minimum(max_pairs_per_prompt, a * b)
    first_row = np.concatenate([[0], np.cumsum(size[mixed])[:-1]]).astype(np.intp)  # each prompt's block in rows
    prompt = np.repeat(np.arange(len(mixed)), n_pairs)
    t = np.arange(len(prompt)) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    i, r = t % a[prompt], t // a[prompt]
    chosen = rows[first_row[prompt] + i]
    rejected = rows[first_row[prompt] + a[prompt] + (i + r) % b[prompt]]
    ids = _arrow(pool["candidate_id"])
    pairs = pa.table({"prompt_id": groups.ids.take(pa.array(mixed[prompt])), "chosen_id": ids.take(pa.array(chosen)),
                      "rejected_id": ids.take(pa.array(rejected)), "chosen_score": reward[chosen],
                      "rejected_score": reward[rejected],  # and where they are, for select (no id matching)
                      ROW_COLUMNS[0]: chosen, ROW_COLUMNS[1]: rejected}).to_pandas()
    return pairs, pd.concat(drops, ignore_index=True) if drops else schema.empty(schema.DROPS)
