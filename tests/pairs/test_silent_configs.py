"""A configuration that would silently do nothing says so: per-prompt curriculum tiers after a rule that makes
one pair per prompt put every pair in tier 0, so the config is refused with what to do instead."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.pairs.config import BuildConfig
from pipelines.pairs.selection import one_pair_per_prompt


def selection(rule: str, params: dict | None = None, **tiers) -> BuildConfig:
    return BuildConfig(selection={"rule": rule, "params": params or {},
                                  "pair_filters": [{"name": "curry_tiers", "params": tiers}]})


@pytest.mark.parametrize("rule,params", [("max_min", {}), ("mu_2sigma", {}), ("max_random", {}),
                                         ("sweet_spot_min5", {}), ("verified", {"max_pairs_per_prompt": 1})])
def test_per_prompt_tiers_after_a_one_pair_rule_are_refused(rule, params):
    with pytest.raises(ValidationError, match=f"rule {rule} makes one pair per prompt, so every pair would be "
                                              r"tier 0; use params: \{scope: global\}"):
        selection(rule, params)


def test_tiers_that_can_order_something_are_accepted():
    selection("max_min", scope="global")                       # tiers over all pairs of the run
    selection("all_ranked")                                    # several pairs per prompt
    selection("verified", {"max_pairs_per_prompt": 3})         # verified with a cap above one
    selection("verified")                                      # the default rule's params: 2 per prompt
    with pytest.raises(ValidationError):
        selection("all_ranked", {"max_pairs_per_prompt": 1})   # capped to one: nothing to order again
    assert one_pair_per_prompt("best_of_set", {}) is False and one_pair_per_prompt("dstc") is True
