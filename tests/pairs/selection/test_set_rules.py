"""best_of_set, verified, sweet_spot_min5, the rank_gap curriculum and the normalised margin on hand-built pools.

Every expected pair, weight, tier and margin is worked out in the comments next to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core import ids, schema
from pipelines.pairs import selection
from pipelines.pairs.selection import PAIR_FILTERS, RULES, select
from pipelines.pairs.selection.best_of_set import best_of_set
from pipelines.pairs.selection.margin import margin
from pipelines.pairs.selection.max_min import max_min
from pipelines.pairs.selection.sweet_spot_min5 import sweet_spot_min5
from pipelines.pairs.selection.verified import verified
from tests.helpers import pair_list, pool, reasons


def test_everything_is_registered():
    assert {"best_of_set", "verified", "sweet_spot_min5"} <= set(RULES)
    assert "rank_gap" in PAIR_FILTERS
    for name in ("best_of_set", "verified", "sweet_spot_min5"):
        assert callable(selection.get_rule(name))
    from pipelines.pairs.config import BuildConfig
    cfg = BuildConfig.from_file("configs/math-verified.yaml")  # the example config validates
    assert cfg.selection.rule == "verified" and cfg.selection.pair_filters[0].name == "rank_gap"


# ---------------------------------------------------------------- sweet_spot_min5

def test_sweet_spot_k2_and_small_k_equal_max_min():
    # k=2: the only other response is drawn
    out = sweet_spot_min5(pool({"a": [0.2, 0.9]}))
    assert pair_list(out) == [("a1", "a0")]
    # k <= n_samples + 1: every other response is drawn, so the rejected is the minimum (= max_min)
    rng = np.random.default_rng(0)
    small = pool({f"p{i}": list(rng.normal(size=6)) for i in range(20)})
    sweet = sweet_spot_min5(small)
    # max_min also hands finish() its row positions (_chosen_pos/_rejected_pos): compare the pair columns
    assert sweet.equals(max_min(small)[list(sweet.columns)])


def test_sweet_spot_ties_go_to_lower_sample_index():
    # chosen: 1.0 at indices 0 and 1 -> index 0; rest {1: 1.0, 2: 0.0, 3: 0.0}, all drawn -> min 0.0 at index 2
    out = sweet_spot_min5(pool({"a": [1.0, 1.0, 0.0, 0.0]}))
    assert pair_list(out) == [("a0", "a2")]


def test_sweet_spot_rejected_is_min_of_a_seeded_draw_of_five():
    k, n_prompts = 12, 40
    rng = np.random.default_rng(1)
    p = pool({f"p{i}": list(rng.permutation(k).astype(float)) for i in range(n_prompts)})  # distinct rewards 0..11
    out = sweet_spot_min5(p, seed=3)
    # expected, by a plain loop: draw = the 5 others with the smallest hash(seed, prompt, sample_index)
    for row in out.itertuples():
        rows = p[p["prompt_id"] == row.prompt_id]
        best = rows.loc[rows["reward"].idxmax()]
        rest = rows[rows["candidate_id"] != best["candidate_id"]]
        u = [int(ids.stable_hash("sweet_spot_min5", 3, row.prompt_id, int(i)), 16) for i in rest["sample_index"]]
        drawn = rest.iloc[np.argsort(u)[:5]]
        assert row.chosen_id == best["candidate_id"]
        assert row.rejected_id == drawn.loc[drawn["reward"].idxmin(), "candidate_id"]
    # rewards 0..11: the chosen is 11; the min of 5 of the other 11 is at most 6 (>= 4 drawn others above it)
    assert (out["chosen_score"] == 11).all() and (out["rejected_score"] <= 6).all()
    assert (out["rejected_score"] > 0).any()          # not max_min
    assert out.equals(sweet_spot_min5(p.iloc[::-1], seed=3))                        # row order does not matter
    assert (out["rejected_id"] != sweet_spot_min5(p, seed=4)["rejected_id"]).any()  # the seed does
    with pytest.raises(ValueError, match="n_samples"):
        sweet_spot_min5(p, n_samples=0)


def test_sweet_spot_through_select_accounts_for_the_rest():
    pairs, drops = select(pool({"a": [0.5, 0.9, 0.1], "flat": [0.3, 0.3]}), "sweet_spot_min5")
    assert pair_list(pairs) == [("a1", "a2")]
    assert reasons(drops) == {("a", "a0"): "not_selected", ("flat", None): "zero_variance"}


# ---------------------------------------------------------------- best_of_set

def test_best_of_set_weights_by_hand():
    p = pool({"a": [4.0, 3.0, 1.0, 0.0]})
    # mean 2: deviations +2, +1, -1, -2; raw = |d_c| * |d_r|: (a0,a3) 4, (a0,a2) 2, (a1,a3) 2, (a1,a2) 1
    # mean raw 9/4 -> weights 16/9, 8/9, 8/9, 4/9 (ties by chosen then rejected sample_index)
    out = best_of_set(p)
    assert pair_list(out) == [("a0", "a3"), ("a0", "a2"), ("a1", "a3"), ("a1", "a2")]
    assert out["weight"].tolist() == pytest.approx([16 / 9, 8 / 9, 8 / 9, 4 / 9])
    assert out["weight"].mean() == pytest.approx(1.0)
    # weight_norm="sum": 4/9, 2/9, 2/9, 1/9
    assert best_of_set(p, weight_norm="sum")["weight"].tolist() == pytest.approx([4 / 9, 2 / 9, 2 / 9, 1 / 9])
    # cap 2 keeps the heaviest two (raw 4, 2), normalised after the cap: mean 3 -> 4/3, 2/3
    capped = best_of_set(p, max_pairs_per_prompt=2)
    assert pair_list(capped) == [("a0", "a3"), ("a0", "a2")]
    assert capped["weight"].tolist() == pytest.approx([4 / 3, 2 / 3])
    # power 0: uniform; power 2: raw 16, 4, 4, 1 -> mean 25/4
    assert best_of_set(p, power=0)["weight"].tolist() == [1.0] * 4
    assert best_of_set(p, power=2)["weight"].tolist() == pytest.approx([64 / 25, 16 / 25, 16 / 25, 4 / 25])
    with pytest.raises(ValueError):
        best_of_set(p, weight_norm="max")


def test_best_of_set_edge_cases_through_select():
    p = pool({"mid": [2.0, 1.0, 0.0],            # mean 1: mid1 sits at the mean -> in neither set
              "two": [1.0, 0.0],                  # k=2: one pair, weight 1
              "err": [4.0, 3.0, None, 1.0, 0.0],  # the error is excluded from the mean: same as the 4-response case
              "flat": [0.5, 0.5, 0.5]})
    pairs, drops = select(p, "best_of_set")
    got = {(c, r): w for c, r, w in zip(pairs["chosen_id"], pairs["rejected_id"], pairs["weight"])}
    assert got == pytest.approx({("mid0", "mid2"): 1.0, ("two0", "two1"): 1.0, ("err0", "err4"): 16 / 9,
                                 ("err0", "err3"): 8 / 9, ("err1", "err4"): 8 / 9, ("err1", "err3"): 4 / 9})
    assert reasons(drops) == {("mid", "mid1"): "not_selected", ("err", "err2"): "score_error",
                              ("flat", None): "zero_variance"}


# ---------------------------------------------------------------- verified

def test_verified_best_correct_vs_worst_incorrect_and_reasons():
    # reward = math_verify + 0.1 * confidence, so all-correct / all-wrong prompts still have reward variance
    p = pool({"mix": [1.05, 0.02, 1.09, 0.08], "wrong": [0.01, 0.05], "right": [1.01, 1.09], "err": [1.0, None]},
             correct={"mix": [1, 0, 1, 0], "wrong": [0, 0], "right": [1, 1], "err": [1, 0]})
    pairs, drops = select(p, "verified")
    # C = {mix2 1.09, mix0 1.05}, I ascending = {mix1 0.02, mix3 0.08}: first pair = best correct, worst incorrect
    assert pair_list(pairs) == [("mix2", "mix1")]
    assert reasons(drops) == {("mix", "mix0"): "not_selected", ("mix", "mix3"): "not_selected",
                              ("wrong", None): "no_correct", ("right", None): "no_incorrect",
                              ("err", "err1"): "score_error", ("err", None): "too_few_valid"}
    assert not (drops["reason"] == "tie").any()  # the rule's own drops get no generic tie row
    detail = drops.set_index("prompt_id").loc["wrong", "detail"]
    assert detail == "0 of 2 valid responses have score_math_verify >= 1"


def test_verified_pure_correctness_reward_gives_zero_variance_first():
    # reward = the 0/1 score alone: an all-correct prompt has no reward spread and never reaches the rule
    p = pool({"right": [1.0, 1.0], "mix": [1.0, 0.0]}, correct={"right": [1, 1], "mix": [1, 0]})
    pairs, drops = select(p, "verified")
    assert pair_list(pairs) == [("mix0", "mix1")]
    assert reasons(drops) == {("right", None): "zero_variance"}


def test_verified_cap_takes_rounds_of_distinct_responses():
    # C by reward desc: a0 (1.9), a1 (1.5); I by reward asc: a4 (0.1), a3 (0.2), a2 (0.3)  (|C|=2, |I|=3)
    # round 0: (C0, I0), (C1, I1); round 1: (C0, I1), (C1, I2); round 2: (C0, I2), (C1, I0)
    p = pool({"a": [1.9, 1.5, 0.3, 0.2, 0.1]}, correct={"a": [1, 1, 0, 0, 0]})
    all6 = verified(p, max_pairs_per_prompt=10)[0]
    assert pair_list(all6) == [("a0", "a4"), ("a1", "a3"), ("a0", "a3"), ("a1", "a2"), ("a0", "a2"), ("a1", "a4")]
    two, drops = select(p, "verified", {"max_pairs_per_prompt": 2})
    assert pair_list(two) == [("a0", "a4"), ("a1", "a3")]          # four distinct responses
    assert reasons(drops) == {("a", "a2"): "not_selected"}


def test_verified_threshold_random_pick_and_errors():
    # an execution-style pass rate: only 1.0 counts as correct at threshold 1.0; 0.5 does at 0.5
    p = pool({"a": [0.5, 1.0, 0.0]}, correct={"a": [0.5, 1.0, 0.0]})
    assert pair_list(verified(p)[0]) == [("a1", "a2")]              # C={a1}; I asc={a2 0.0, a0 0.5}
    assert pair_list(verified(p, threshold=0.5)[0]) == [("a1", "a2")]  # C desc={a1, a0}; I={a2}
    assert len(verified(p, threshold=0.5, max_pairs_per_prompt=5)[0]) == 2
    with pytest.raises(ValueError, match="score_judge"):
        verified(p, correct_scorer="judge")
    # random pick: always a correct chosen and an incorrect rejected, reproducible, seed-dependent
    rng = np.random.default_rng(2)
    many = pool({f"p{i}": list(rng.random(8)) for i in range(40)},
                correct={f"p{i}": [1, 1, 1, 1, 0, 0, 0, 0] for i in range(40)})
    r0 = verified(many, pick="random", seed=0)[0]
    correct_ids = set(many.loc[many["score_math_verify"] == 1, "candidate_id"])
    assert set(r0["chosen_id"]) <= correct_ids and not set(r0["rejected_id"]) & correct_ids
    ids = ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score"]  # (not the row positions)
    assert r0[ids].equals(verified(many.iloc[::-1], pick="random", seed=0)[0][ids])
    r1 = verified(many, pick="random", seed=1)[0]
    assert (r0["chosen_id"] != r1["chosen_id"]).any() and (r0["rejected_id"] != r1["rejected_id"]).any()


def test_verified_correctness_beats_reward_negative_margin_kept():
    # a verifier with a small weight: the correct answer has the lower reward; the pair is kept (margin < 0)
    p = pool({"a": [0.3, 0.9]}, correct={"a": [1, 0]})
    pairs, drops = select(p, "verified")
    assert pair_list(pairs) == [("a0", "a1")] and pairs["margin"].iloc[0] == pytest.approx(-0.6)
    assert drops.empty


# ---------------------------------------------------------------- the rule protocol: (pairs, drops)

def test_rule_drops_replace_generic_rows_and_contradictions_raise(monkeypatch):
    p = pool({"a": [0.9, 0.5, 0.1], "b": [1.0, 0.0]})

    def own_reasons(valid):
        pairs = pd.DataFrame({"prompt_id": ["a"], "chosen_id": ["a0"], "rejected_id": ["a2"],
                              "chosen_score": [0.9], "rejected_score": [0.1]})
        drops = pd.concat([schema.drop_rows(["b"], "select", "no_correct", "x", rule="own"),
                           schema.drop_rows(["a"], "select", "no_incorrect", "y", rule="own", candidate_ids=["a1"])])
        return pairs, drops

    monkeypatch.setattr(selection, "get_rule", lambda name: own_reasons)
    pairs, drops = select(p, "own")
    # b: the rule's prompt-level row only (no generic tie); a1: the rule's row only (no not_selected)
    assert pair_list(pairs) == [("a0", "a2")]
    assert sorted(drops[["prompt_id", "reason"]].itertuples(index=False, name=None)) == [
        ("a", "no_incorrect"), ("b", "no_correct")]

    def contradictory(valid):
        pairs = pd.DataFrame({"prompt_id": ["b"], "chosen_id": ["b0"], "rejected_id": ["b1"],
                              "chosen_score": [1.0], "rejected_score": [0.0]})
        return pairs, schema.drop_rows(["b"], "select", "no_correct", "x", rule="bad")

    monkeypatch.setattr(selection, "get_rule", lambda name: contradictory)
    with pytest.raises(RuntimeError, match="dropped prompt"):
        select(p, "bad")


# ---------------------------------------------------------------- rank_gap

def test_rank_gap_tiers_all_ranked_pairs():
    # n=4 distinct rewards: gap 3 -> tier 0; gap 2 -> floor(1*3/3) = 1; gap 1 -> floor(2*3/3) = 2
    p = pool({"a": [3.0, 2.0, 1.0, 0.0], "two": [1.0, 0.0]})
    pairs, drops = select(p, "all_ranked", {"mode": "all"}, pair_filters=[("rank_gap", {"n_tiers": 3})])
    got = {(c, r): (g, t) for c, r, g, t in zip(pairs["chosen_id"], pairs["rejected_id"], pairs["rank_gap"],
                                                 pairs["tier"])}
    assert got == {("a0", "a3"): (3, 0), ("a0", "a2"): (2, 1), ("a1", "a3"): (2, 1), ("a0", "a1"): (1, 2),
                   ("a1", "a2"): (1, 2), ("a2", "a3"): (1, 2), ("two0", "two1"): (1, 0)}  # k=2: tier 0
    assert drops.empty
    one, _ = select(p, "all_ranked", {"mode": "all"}, pair_filters=[("rank_gap", {"n_tiers": 1})])
    assert (one["tier"] == 0).all()


def test_rank_gap_ties_and_errors_use_the_valid_ranking():
    # t: [3, 2, 2, 0]: tied responses count as in between, so (t0,t1) and (t0,t2) are alike:
    #   (t0,t3) [0,3] holds 4 -> gap 3 tier 0; (t0,t1) [2,3] holds 3 -> gap 2 tier 1; (t1,t3) [0,2] holds 3 -> gap 2
    # e: [3, 2, None, 1]: n = 3 valid: gap 2 -> tier 0; gap 1 -> floor(1*3/2) = 1
    p = pool({"t": [3.0, 2.0, 2.0, 0.0], "e": [3.0, 2.0, None, 1.0]})
    pairs, _ = select(p, "all_ranked", {"mode": "all"}, pair_filters=[("rank_gap", {})])
    got = dict(zip(zip(pairs["chosen_id"], pairs["rejected_id"]), zip(pairs["rank_gap"], pairs["tier"])))
    assert got == {("t0", "t3"): (3, 0), ("t0", "t1"): (2, 1), ("t0", "t2"): (2, 1), ("t1", "t3"): (2, 1),
                   ("t2", "t3"): (2, 1), ("e0", "e3"): (2, 0), ("e0", "e1"): (1, 1), ("e1", "e3"): (1, 1)}


def test_rank_gap_needs_the_pool():
    from pipelines.pairs.selection.rank_gap import rank_gap
    pairs = pd.DataFrame({"prompt_id": ["a"], "chosen_id": ["a0"], "rejected_id": ["a1"],
                          "chosen_score": [1.0], "rejected_score": [0.0]})
    with pytest.raises(ValueError, match="valid pool"):
        rank_gap(pairs, None)


# ---------------------------------------------------------------- normalised margin

def test_margin_normalised_by_prompt_std_and_range():
    # p: [0, 1, 2, 3] -> max_min margin 3; population std sqrt(1.25) = 1.1180 -> 2.683; sample std 1.2910 -> 2.324;
    #    range 3 -> 1.0
    # q: [0, 0.1]    -> margin 0.1; population std 0.05 -> 2.0; range 0.1 -> 1.0
    p = pool({"p": [0.0, 1.0, 2.0, 3.0], "q": [0.0, 0.1]})
    absolute, d = select(p, "max_min", pair_filters=[("margin", {"min_margin": 0.5})])
    assert absolute["prompt_id"].tolist() == ["p"] and reasons(d)[("q", None)] == "below_margin"
    rng_kept, _ = select(p, "max_min", pair_filters=[("margin", {"min_margin": 0.99, "normalize": "range"})])
    assert sorted(rng_kept["prompt_id"]) == ["p", "q"] and rng_kept["norm_margin"].tolist() == pytest.approx([1, 1])
    std_kept, d = select(p, "max_min", pair_filters=[("margin", {"min_margin": 2.5, "normalize": "std"})])
    assert std_kept["prompt_id"].tolist() == ["p"]
    assert std_kept["norm_margin"].iloc[0] == pytest.approx(3 / np.sqrt(1.25))
    assert reasons(d)[("q", None)] == "below_margin" and "2 (std-normalised) < 2.5" in d["detail"].iloc[-1]
    sample, _ = select(p, "max_min", pair_filters=[("margin", {"min_margin": 2.4, "normalize": "std", "ddof": 1})])
    assert sample["prompt_id"].tolist() == []  # p: 2.324 < 2.4, q: 0.1 / 0.0707 = 1.41


def test_margin_normalisation_uses_all_valid_responses_not_only_paired_ones():
    # best_vs_rest pairs of [4, 3, 1, None, 0]: the error is not in the stats; range = 4 (from 0 and 4, valid)
    # (a0,a4) 4/4 = 1, (a0,a2) 3/4, (a0,a1) 1/4 < 0.5 -> removed; a1 then in no pair -> a candidate-level row
    p = pool({"a": [4.0, 3.0, 1.0, None, 0.0]})
    pairs, drops = select(p, "all_ranked", pair_filters=[("margin", {"min_margin": 0.5, "normalize": "range"})])
    assert pair_list(pairs) == [("a0", "a4"), ("a0", "a2")]
    assert pairs["norm_margin"].tolist() == pytest.approx([1.0, 0.75])
    assert reasons(drops) == {("a", "a3"): "score_error", ("a", "a1"): "below_margin"}
    with pytest.raises(ValueError, match="valid pool"):
        margin(pairs, None, normalize="std")
    with pytest.raises(ValueError, match="normalize"):
        margin(pairs, None, normalize="zscore")
