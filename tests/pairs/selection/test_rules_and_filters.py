"""max_random rule and margin pair filter on hand-built pools; every prompt/candidate ends in a pair or a drop."""

from __future__ import annotations

import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection import select
from pipelines.pairs.selection.max_random import max_random
from tests.helpers import pool_rows


def unaccounted(pool, pairs, drops):
    """Prompts/candidates in neither a pair nor a drop row (a prompt-level row covers an unpaired prompt)."""
    paired_prompts = set(pairs["prompt_id"])
    prompt_rows = set(drops.loc[drops["candidate_id"].isna(), "prompt_id"])
    cand_rows = set(drops["candidate_id"].dropna())
    used = set(pairs["chosen_id"]) | set(pairs["rejected_id"])
    lost_p = set(pool["prompt_id"]) - paired_prompts - prompt_rows
    lost_c = {c for p, c in zip(pool["prompt_id"], pool["candidate_id"])
              if c not in used and c not in cand_rows and not (p in prompt_rows and p not in paired_prompts)}
    return lost_p, lost_c


def test_max_random_takes_best_and_another_deterministically():
    pool = pool_rows([("p", "a", 0, 0.9), ("p", "b", 1, 0.2), ("p", "c", 2, 0.5), ("p", "d", 3, 0.9)])
    out = max_random(pool, seed=1)
    assert out["chosen_id"].tolist() == ["a"]          # tie at 0.9 goes to the lower sample_index
    assert out["rejected_id"].iloc[0] in {"b", "c", "d"}
    assert out.equals(max_random(pool.iloc[::-1], seed=1))  # row order does not matter


def test_max_random_seed_changes_some_draws():
    rows = [(f"p{i}", f"p{i}c{j}", j, float(j)) for i in range(30) for j in range(5)]
    a, b = max_random(pool_rows(rows), seed=0), max_random(pool_rows(rows), seed=1)
    assert (a["chosen_id"] == b["chosen_id"]).all()
    assert (a["rejected_id"] != b["rejected_id"]).any()
    assert set(a["rejected_id"]).issubset({f"p{i}c{j}" for i in range(30) for j in range(4)})


def test_margin_filter_accounts_for_every_prompt_and_candidate():
    pool = pool_rows([
        ("err", "e1", 0, None), ("err", "e2", 1, 0.3),                      # score_error + too_few_valid
        ("flat", "f1", 0, 0.5), ("flat", "f2", 1, 0.5),                     # zero_variance
        ("small", "s1", 0, 0.50), ("small", "s2", 1, 0.45),                 # margin 0.05 < 0.1: below_margin
        ("big", "b1", 0, 1.0), ("big", "b2", 1, 0.0), ("big", "b3", 2, 0.5),  # pair b1/b2, b3 not_selected
    ])
    pairs, drops = select(pool, "max_min", pair_filters=[("margin", {"min_margin": 0.1})])
    assert pairs[["prompt_id", "chosen_id", "rejected_id"]].values.tolist() == [["big", "b1", "b2"]]
    by = {(p, c if isinstance(c, str) else None): r
          for p, c, r in drops[["prompt_id", "candidate_id", "reason"]].values}
    assert by[("err", "e1")] == "score_error" and by[("err", None)] == "too_few_valid"
    assert by[("flat", None)] == "zero_variance" and by[("small", None)] == "below_margin"
    assert by[("big", "b3")] == "not_selected"
    assert set(drops["reason"]) <= set(schema.REASONS)
    assert unaccounted(pool, pairs, drops) == (set(), set())


def test_margin_filter_partial_removal_writes_candidate_rows():
    from pipelines.pairs.selection.margin import margin
    pairs = pd.DataFrame({"prompt_id": ["p", "p"], "chosen_id": ["a", "a"], "rejected_id": ["b", "c"],
                          "chosen_score": [1.0, 1.0], "rejected_score": [0.0, 0.95]})
    kept, drops = margin(pairs, None, min_margin=0.1)
    assert kept["rejected_id"].tolist() == ["b"]
    assert drops[["candidate_id", "reason"]].values.tolist() == [["c", "below_margin"]]


def test_all_ranked_best_vs_rest_and_all_with_cap():
    from pipelines.pairs.selection.all_ranked import all_ranked
    pool = pool_rows([("p", "a", 0, 3.0), ("p", "b", 1, 1.0), ("p", "c", 2, 2.0), ("p", "d", 3, 1.0)])
    best = all_ranked(pool)
    # gaps from a (3.0): b 2.0, d 2.0, c 1.0 -> largest first, ties by sample_index
    assert list(zip(best["chosen_id"], best["rejected_id"])) == [("a", "b"), ("a", "d"), ("a", "c")]
    every = all_ranked(pool, mode="all", min_gap=0.5, max_pairs_per_prompt=4)
    # all gaps > 0.5: a-b 2, a-d 2, a-c 1, c-b 1, c-d 1 (b-d equal: never a pair); cap 4 drops c-d
    assert list(zip(every["chosen_id"], every["rejected_id"])) == [("a", "b"), ("a", "d"), ("a", "c"), ("c", "b")]


def test_curry_tiers_orders_by_gap_and_drops_nothing():
    pool = pool_rows([("p", "a", 0, 3.0), ("p", "b", 1, 0.0), ("p", "c", 2, 2.0), ("p", "d", 3, 1.0),
                    ("q", "x", 0, 1.0), ("q", "y", 1, 0.0)])
    pairs, drops = select(pool, "all_ranked", pair_filters=[("curry_tiers", {"n_tiers": 3})])
    tiers = dict(zip(zip(pairs["chosen_id"], pairs["rejected_id"]), pairs["tier"]))
    assert tiers == {("a", "b"): 0, ("a", "d"): 1, ("a", "c"): 2, ("x", "y"): 0}
    assert drops.empty
    g, _ = select(pool, "all_ranked", pair_filters=[("curry_tiers", {"n_tiers": 2, "scope": "global"})])
    # global margins 3, 2, 1, 1 -> ranks 0..3 -> tiers 0, 0, 1, 1
    assert dict(zip(zip(g["chosen_id"], g["rejected_id"]), g["tier"])) == {
        ("a", "b"): 0, ("a", "d"): 0, ("a", "c"): 1, ("x", "y"): 1}


def test_length_filter_drop_and_weight():
    from pipelines.pairs.selection import SelectionContext
    pool = pool_rows([("p", "a", 0, 1.0), ("p", "b", 1, 0.0), ("q", "x", 0, 1.0), ("q", "y", 1, 0.0)])
    cands = pd.DataFrame({"candidate_id": ["a", "b", "x", "y"], "text": ["a" * 40, "b" * 10, "x" * 12, "y" * 10],
                          "completion_tokens": [4, 4, 3, 1]})
    ctx = SelectionContext(candidates=cands, prompts=pd.DataFrame())
    pairs, drops = select(pool, "max_min", ctx=ctx, pair_filters=[("length", {"max_ratio": 2.0})])
    assert pairs["prompt_id"].tolist() == ["q"]                      # p: 40/10 = 4 > 2; q: 1.2
    assert drops[["prompt_id", "reason"]].values.tolist() == [["p", "length_ratio"]]
    w, d = select(pool, "max_min", ctx=ctx, pair_filters=[("length", {"max_ratio": 2.0, "unit": "tokens",
                                                                        "mode": "weight"})])
    # tokens: p 4/4 = 1 (weight 1), q 3/1 = 3 > 2 -> weight 2/3
    assert dict(zip(w["prompt_id"], w["weight"].round(6))) == {"p": 1.0, "q": round(2 / 3, 6)} and d.empty
