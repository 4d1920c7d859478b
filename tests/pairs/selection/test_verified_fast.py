"""verified on integer codes (pipelines/pairs/selection/verified.py) against the pandas version it replaced
(groupby, sort_values, a merge of every correct x incorrect pair), kept here as the reference: the same pairs in the
same order and the same drop rows, on random pools with ties, fractional scores, every prompt kind (none / all /
some correct), consecutive and shuffled rows, both picks and several caps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.pairs.selection import select
from pipelines.pairs.selection.common import hash_uniform
from pipelines.pairs.selection.grouped import groups_of
from pipelines.pairs.selection.verified import verified

COLS = ["prompt_id", "candidate_id", "sample_index", "reward"]


def random_pool(seed: int, n_prompts: int = 400, layout: str = "consecutive") -> pd.DataFrame:
    """layout: "uniform" (k = 6 rows per prompt in sample_index order, as sample_stage writes a full pool: the
    rule's per-block sort), "consecutive" (2-8 rows per prompt in any sample order) or "shuffled" rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_prompts):
        pid = f"{rng.integers(0, 2**40):010x}"
        k = 6 if layout == "uniform" else int(rng.integers(2, 9))
        p_correct = rng.choice([0.0, 1.0, 0.3, 0.7])
        for i in range(k) if layout == "uniform" else rng.permutation(k):
            ok = rng.random() < p_correct
            score = 1.0 if ok else float(rng.choice([0.0, 0.5]))
            reward = score + 0.25 * float(rng.integers(0, 3))  # a coarse grid: ties inside a prompt
            rows.append({"prompt_id": pid, "candidate_id": f"{pid}-{i}", "sample_index": int(i), "reward": reward,
                         "score_math_verify": score, "error": None})
    df = pd.DataFrame(rows)
    if layout == "shuffled":
        df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df


def rows(df: pd.DataFrame, columns) -> list[tuple]:
    return list(zip(*(df[c].astype(object).where(df[c].notna(), None).tolist() for c in columns)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("layout", ["uniform", "consecutive", "shuffled"])
@pytest.mark.parametrize("params", [{}, {"max_pairs_per_prompt": 2}, {"max_pairs_per_prompt": 10},
                                    {"threshold": 0.5, "max_pairs_per_prompt": 3},
                                    {"pick": "random", "seed": 7, "max_pairs_per_prompt": 2}])
def test_verified_equals_the_pandas_version(seed, layout, params):
    pool = random_pool(seed, layout=layout)
    assert bool(groups_of(pool["prompt_id"]).uniform_run(pool["sample_index"].to_numpy())) == (layout == "uniform")
    pairs, drops = verified(pool, **params)
    want_pairs, want_drops = pandas_verified(pool, **params)
    assert len(want_pairs) > 100 and len(want_drops) > 10  # pairs and prompt-level drops to compare
    if "threshold" not in params:  # 0/1 scores: prompts with no correct and with only correct responses
        assert set(want_drops["reason"]) == {"no_correct", "no_incorrect"}
    pair_columns = ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score"]
    assert rows(pairs, pair_columns) == rows(want_pairs, pair_columns)
    drop_columns = list(want_drops.columns)
    assert rows(drops, drop_columns) == rows(want_drops, drop_columns)


def test_select_with_verified_accounts_for_every_candidate():
    pool = random_pool(3)
    pairs, drops = select(pool, "verified", {"max_pairs_per_prompt": 2})
    used = set(pairs["chosen_id"]) | set(pairs["rejected_id"])
    whole = set(drops.loc[drops["candidate_id"].isna(), "prompt_id"])
    single = set(drops["candidate_id"].dropna())
    assert used and whole and single
    for r in pool.itertuples():  # (a prompt may have a pair and a prompt-level `tie` row for a tied second pair)
        assert r.candidate_id in used or r.candidate_id in single or r.prompt_id in whole, r
        assert not (r.candidate_id in used and r.candidate_id in single), r


def pandas_verified(pool: pd.DataFrame, correct_scorer: str = "math_verify", threshold: float = 1.0,
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


@pytest.mark.parametrize("layout", ["uniform", "shuffled"])
def test_select_with_it_equals_select_with_the_pandas_version(monkeypatch, layout):
    """select's path for a rule that returns row positions and drops prompts (finish told which rows the rule
    accounted for, the not_selected texts from the helper thread) against its id-matching path (the pandas rule
    returns no positions): the same pairs and the same drop rows, detail texts included; with scorer errors in
    the pool."""
    import pipelines.pairs.selection as selection
    from pipelines.pairs.selection import common

    pool = random_pool(5, layout=layout)
    broken = pool.sample(n=40, random_state=1).index
    pool.loc[broken, "reward"] = np.nan
    pool.loc[broken, "error"] = "scorer failed"
    monkeypatch.setattr(common.RewardTexts, "MIN_ROWS", 0)  # the helper thread at this size too
    params = {"max_pairs_per_prompt": 2}
    pairs, drops = select(pool, "verified", params)
    rule = selection.get_rule
    monkeypatch.setattr(selection, "get_rule", lambda name: pandas_verified if name == "verified" else rule(name))
    want_pairs, want_drops = select(pool, "verified", params)
    assert set(drops["reason"]) >= {"not_selected", "no_correct", "no_incorrect", "score_error"}
    assert rows(pairs, list(want_pairs.columns)) == rows(want_pairs, list(want_pairs.columns))
    key = ["prompt_id", "candidate_id", "reason"]
    assert sorted(rows(drops, list(want_drops.columns)), key=repr) == \
        sorted(rows(want_drops, list(want_drops.columns)), key=repr)
    assert len(drops.drop_duplicates(key)) == len(drops)


def test_a_rule_that_pairs_a_candidate_it_dropped_is_an_error(monkeypatch):
    """The rows the rule accounts for with its own drop rows get none from finish; pairing one of them as well is a
    bug in the rule, and select says so instead of writing both."""
    import pipelines.pairs.selection as selection

    pool = random_pool(3, n_prompts=20, layout="uniform")

    def greedy(valid, **_):  # pairs the first two rows of the first prompt and drops the first as a duplicate
        pairs = pd.DataFrame({"prompt_id": [valid["prompt_id"].iloc[0]], "chosen_id": [valid["candidate_id"].iloc[0]],
                              "rejected_id": [valid["candidate_id"].iloc[1]], "chosen_score": [2.0],
                              "rejected_score": [1.0], "_chosen_pos": [0], "_rejected_pos": [1]})
        drops = schema.drop_rows([valid["prompt_id"].iloc[0]], "select", "duplicate_response", "dup",
                                 rule="greedy", candidate_ids=[valid["candidate_id"].iloc[0]])
        return pairs, drops

    monkeypatch.setattr(selection, "get_rule", lambda name: greedy)
    with pytest.raises(RuntimeError, match="paired a candidate it also dropped"):
        select(pool, "greedy")
