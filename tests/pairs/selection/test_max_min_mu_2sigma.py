"""max_min and mu_2sigma on hand-built pools; every edge case's answer is worked out in the comments."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.pairs.selection import select
from tests.helpers import pool, reasons


def pairs_of(pairs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {r.prompt_id: (r.chosen_id, r.rejected_id) for r in pairs.itertuples()}


def test_max_min_basic_and_margin():
    pairs, drops = select(pool({"a": [0.2, 0.9, 0.5, 0.1]}), "max_min")
    assert pairs_of(pairs) == {"a": ("a1", "a3")}
    assert pairs["margin"][0] == pytest.approx(0.8)
    assert reasons(drops) == {("a", "a0"): "not_selected", ("a", "a2"): "not_selected"}


def test_ties_inside_max_and_min_go_to_lower_sample_index():
    pairs, _ = select(pool({"a": [0.5, 1.0, 0.0, 1.0, 0.0]}), "max_min")
    assert pairs_of(pairs) == {"a": ("a1", "a2")}


def test_zero_variance_too_few_valid_and_score_errors():
    p = pool({"flat": [0.3, 0.3, 0.3], "one": [0.7, None, None], "none": [None, None], "ok": [1.0, None, 0.0]})
    for rule in ("max_min", "mu_2sigma"):
        pairs, drops = select(p, rule)
        assert pairs_of(pairs) == {"ok": ("ok0", "ok2")}
        r = reasons(drops)
        assert r[("flat", None)] == "zero_variance"
        assert r[("one", None)] == "too_few_valid" and r[("none", None)] == "too_few_valid"
        assert r[("ok", "ok1")] == "score_error" and r[("one", "one1")] == "score_error"
        assert set(drops.loc[drops.reason == "too_few_valid", "detail"]) == {"1 valid of 3 responses",
                                                                           "0 valid of 2 responses"}
        # every prompt is paired or dropped at prompt level
        prompt_level = set(drops.loc[drops.candidate_id.isna(), "prompt_id"])
        assert set(pairs.prompt_id) | prompt_level == {"flat", "one", "none", "ok"}


def test_mu_2sigma_picks_nearest_to_mu_minus_2sigma():
    # rewards 0,4,5,6,10,5,5,5: mu = 5, population sigma = sqrt((25+1+1+25)/8) = sqrt(6.5) = 2.5495
    # mu - 2 sigma = -0.099 -> nearest is 0 (index 0): equals max_min here.
    pairs, _ = select(pool({"a": [0, 4, 5, 6, 10, 5, 5, 5]}), "mu_2sigma")
    assert pairs_of(pairs) == {"a": ("a4", "a0")}
    # rewards 1,2,3,4,5,6,7,8,9,30: mu = 7.5; population sigma = sqrt(mean((r-7.5)^2)) = 7.6583
    # mu - 2 sigma = -7.8 -> nearest is 1 (the min). With the mu-sigma point: 7.5 - 7.658 = -0.158 -> min too.
    # Use chosen=max, rejected=mu: nearest to 7.5 are 7 and 8 (both 0.5 away): the tie goes to the LOWER reward (7).
    pairs, _ = select(pool({"b": [1, 2, 3, 4, 5, 6, 7, 8, 9, 30]}), "mu_2sigma", {"rejected_point": "mu"})
    assert pairs_of(pairs) == {"b": ("b9", "b6")}


def test_mu_2sigma_differs_from_max_min_when_minimum_is_an_outlier():
    # 12 x 1.0, 3 x 0.6, one 0.0 (k=16): mu = 13.8/16 = 0.8625;
    # pop var = (12*0.01891 + 3*0.06891 + 0.74391)/16 = 1.17750/16 = 0.07359, sigma = 0.27128
    # mu - 2 sigma = 0.3199: |0.6 - 0.3199| = 0.280 < |0.0 - 0.3199| = 0.320 -> rejected is the first 0.6 (a12),
    # whereas max_min takes the outlier 0.0 (a15). Chosen: the first 1.0 (a0) in both.
    rewards_ = [1.0] * 12 + [0.6] * 3 + [0.0]
    pairs, _ = select(pool({"a": rewards_}), "mu_2sigma")
    assert pairs_of(pairs)["a"] == ("a0", "a12")
    mm, _ = select(pool({"a": rewards_}), "max_min")
    assert pairs_of(mm)["a"] == ("a0", "a15")


def test_population_vs_sample_sigma():
    # rewards 0, 0.1, 0.4, 0.6, 1.0; mu = 0.42; squared deviations sum to 0.648.
    # population sigma = sqrt(0.648/5) = 0.36    -> mu - sigma = 0.06   -> nearest 0.1 (0.04 < 0.06): a1
    # sample sigma     = sqrt(0.648/4) = 0.4025  -> mu - sigma = 0.0175 -> nearest 0.0 (0.0175 < 0.0825): a0
    p = pool({"a": [0.0, 0.1, 0.4, 0.6, 1.0]})
    pop, _ = select(p, "mu_2sigma", {"rejected_point": "mu-sigma"})
    sample, _ = select(p, "mu_2sigma", {"rejected_point": "mu-sigma", "ddof": 1})
    assert pairs_of(pop) == {"a": ("a4", "a1")}
    assert pairs_of(sample) == {"a": ("a4", "a0")}


def test_mu_2sigma_small_k_and_bad_points():
    pairs, drops = select(pool({"a": [0.2, 0.8]}), "mu_2sigma")  # k=2: always max vs the other one
    assert pairs_of(pairs) == {"a": ("a1", "a0")} and drops.empty
    with pytest.raises(ValueError, match="unknown point"):
        select(pool({"a": [0.2, 0.8]}), "mu_2sigma", {"rejected_point": "median"})
    with pytest.raises(ValueError, match="must lie above"):
        select(pool({"a": [0.2, 0.8]}), "mu_2sigma", {"chosen_point": "mu", "rejected_point": "max"})


def test_tie_between_chosen_and_rejected_is_dropped():
    # chosen = max (1.0, a0); with rejected_point = "max" disallowed, build a tie via max_min impossible
    # (max == min -> zero_variance). mu_2sigma with chosen "mu+sigma": rewards 0, 1, 1 -> mu = 2/3,
    # pop sigma = 0.4714, mu + s = 1.138 -> chosen a1 (1.0); rejected "mu": 0.667 -> nearest 1.0 (a2, 0.333)
    # vs 0 (0.667): a2, reward 1.0 == chosen's -> tie.
    pairs, drops = select(pool({"a": [0.0, 1.0, 1.0]}), "mu_2sigma", {"chosen_point": "mu+sigma",
                                                                     "rejected_point": "mu"})
    assert pairs.empty
    assert reasons(drops) == {("a", None): "tie"}
