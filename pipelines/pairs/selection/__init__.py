"""Pair selection: a scored pool (one row per candidate with a `reward`) -> pairs + drop rows.

    pool --pool_filters--> pool --rule--> pairs --pair_filters--> pairs      (+ drop rows at every step)

- A *rule* is one module with one function `rule(pool, **params) -> DataFrame` over the *valid* pool (errors,
  prompts with < 2 valid responses and zero-variance prompts are already dropped by `common.prepare`). It returns
  one row per pair: prompt_id, chosen_id, rejected_id, chosen_score, rejected_score (+ optional weight, tier),
  or `(pairs, drops)` when it rejects prompts or candidates for a reason of its own (`verified`: no_correct,
  no_incorrect). A prompt the rule dropped at prompt level must have no pair; it gets no generic `tie` row and its
  candidates no `not_selected` rows (the prompt-level row covers them).
- A *pool filter* `f(pool, ctx, **params) -> (pool, drops)` runs before the rule (e.g. near-duplicate responses).
- A *pair filter* `f(pairs, ctx, **params) -> (pairs, drops)` runs after it, in config order (margins, CHES,
  length control); orderings (curricula) are pair filters that set `tier` and drop nothing. `ctx.pool` is the
  valid pool the rule saw (per-prompt reward statistics, ranks).
`select` drops ties and records every unused candidate, so nothing leaves without a reason.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.core.registry import lookup
from pipelines.pairs.selection import common
from pipelines.pairs.selection.grouped import groups_of

RULES = {
    "max_min": "pipelines.pairs.selection.max_min:max_min",
    "mu_2sigma": "pipelines.pairs.selection.mu_2sigma:mu_2sigma",
    "max_random": "pipelines.pairs.selection.max_random:max_random",
    "all_ranked": "pipelines.pairs.selection.all_ranked:all_ranked",
    "dstc": "pipelines.pairs.selection.dstc:dstc",
    "sweet_spot_min5": "pipelines.pairs.selection.sweet_spot_min5:sweet_spot_min5",
    "best_of_set": "pipelines.pairs.selection.best_of_set:best_of_set",
    "verified": "pipelines.pairs.selection.verified:verified",
}
POOL_FILTERS: dict[str, str] = {
    "dedup_responses": "pipelines.pairs.selection.dedup:dedup_responses",
    "dedup_prompts": "pipelines.pairs.selection.dedup:dedup_prompts",
    "drop_truncated": "pipelines.pairs.selection.truncated:drop_truncated",
}
PAIR_FILTERS: dict[str, str] = {
    "margin": "pipelines.pairs.selection.margin:margin",
    "curry_tiers": "pipelines.pairs.selection.curry_tiers:curry_tiers",
    "rank_gap": "pipelines.pairs.selection.rank_gap:rank_gap",
    "length": "pipelines.pairs.selection.length:length",
    "ches": "pipelines.pairs.selection.ches:ches",
    "implicit_margin": "pipelines.pairs.selection.implicit_margin:implicit_margin",
    "dual_margin": "pipelines.pairs.selection.dual_margin:dual_margin",
    "diverse_subset": "pipelines.pairs.selection.diversity:diverse_subset",
}


# rules that make at most one pair per prompt whatever their parameters (others do with max_pairs_per_prompt: 1)
ONE_PAIR_RULES = {"max_min", "mu_2sigma", "max_random", "dstc", "sweet_spot_min5"}


def one_pair_per_prompt(rule: str, params: dict | None = None) -> bool:
    """Whether `rule` with `params` makes at most one pair per prompt (then per-prompt orderings do nothing)."""
    if rule in ONE_PAIR_RULES:
        return True
    cap = inspect.signature(get_rule(rule)).parameters.get("max_pairs_per_prompt")
    return (params or {}).get("max_pairs_per_prompt", None if cap is None else cap.default) == 1


@dataclass
class SelectionContext:
    """What filters may need beyond the pool: texts, token counts, prompts (read-only).

    `select` fills `pool` with the valid pool the rule saw (after pool filters), so pair filters can use
    per-prompt statistics of all valid responses, not only of the paired ones; without a ctx, `select` builds
    one with only the pool (filters that need texts then say so)."""
    candidates: pd.DataFrame | None   # CANDIDATES table
    prompts: pd.DataFrame | None      # PROMPTS table
    pool: pd.DataFrame | None = None  # valid scored pool (prompt_id, candidate_id, sample_index, reward, ...)


def get_rule(name: str):
    return lookup(RULES, name, "selection rule")


def select(pool: pd.DataFrame, rule: str, params: dict | None = None, ctx: SelectionContext | None = None,
           pool_filters=(), pair_filters=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs index frame, drops). Pairs carry ids and scores; `stages.materialize_pairs` adds the messages.

    pool_filters / pair_filters: sequences of (name, params)."""
    texts = common.RewardTexts.start(pool)  # the not_selected details, on another core while the rule runs
    valid, drops, pool_rows = common.prepare_rows(pool, rule)
    all_drops = [drops]
    for name, fparams in pool_filters:
        valid, more = lookup(POOL_FILTERS, name, "pool filter")(valid, ctx, **(fparams or {}))
        all_drops.append(more)
    if pool_filters:  # a pool filter may leave a prompt with < 2 responses or no spread: re-check
        valid, more = common.prepare(valid, rule)
        all_drops.append(more)
    out = get_rule(rule)(valid, **(params or {})) if len(valid) else common.empty_pairs()
    pairs, rule_drops = out if isinstance(out, tuple) else (out, common.no_drops())
    all_drops.append(rule_drops)
    # what the rule dropped itself must not get a second, generic row (tie / not_selected) from finish
    kept = unclaimed(valid, pairs, rule_drops, rule)
    # without pool filters finish's rows are pool rows (pool_rows says which): the texts' positions hold
    pairs, more = common.finish(pool, valid, pairs, rule, None if pool_filters else texts, pool_rows, kept)
    all_drops.append(more)
    ctx = dataclasses.replace(ctx, pool=valid) if ctx is not None else \
        SelectionContext(candidates=None, prompts=None, pool=valid)
    for name, fparams in pair_filters:
        before = pairs
        pairs, more = lookup(PAIR_FILTERS, name, "pair filter")(pairs, ctx, **(fparams or {}))
        all_drops.append(more)
        common.check_accounted(before, pairs, more, name)
    nonempty = [d for d in all_drops if len(d)]
    return pairs, pd.concat(nonempty, ignore_index=True) if nonempty else drops


def unclaimed(valid: pd.DataFrame, pairs: pd.DataFrame, rule_drops: pd.DataFrame, rule: str) -> np.ndarray | None:
    """The mask of valid's rows that the rule's own drop rows do not account for (None: all of them):
    prompt-level rows remove the prompt (which must then have no pair), candidate-level rows remove the candidate.
    A mask, not the frame: filtering the 1M-row pool (verified drops a third of its prompts) cost 38 ms."""
    if rule_drops.empty:
        return None
    whole = rule_drops["candidate_id"].isna()
    dropped_prompts = rule_drops.loc[whole, "prompt_id"]
    both = common.isin(pairs["prompt_id"], dropped_prompts)
    if both.any():
        raise RuntimeError(f"rule {rule} dropped prompt(s) {sorted(set(pairs.loc[both, 'prompt_id']))[:5]} "
                           "and also paired them")
    groups = groups_of(valid["prompt_id"])  # the prompts matched once each, not once per row
    gone = groups.broadcast(common.isin(pd.Series(groups.ids.to_pandas()), dropped_prompts).to_numpy())
    if not whole.all():
        gone = gone | common.isin(valid["candidate_id"], rule_drops.loc[~whole, "candidate_id"]).to_numpy()
    return ~gone
