"""Pair selection: a scored pool (one row per candidate with a `reward`) -> pairs + drop rows.

    pool --pool_filters--> pool --rule--> pairs --pair_filters--> pairs      (+ drop rows at every step)

- A *rule* is one module with one function `rule(pool, **params) -> DataFrame` over the *valid* pool (errors,
  prompts with < 2 valid responses and zero-variance prompts are already dropped by `common.prepare`). It returns
  one row per pair: prompt_id, chosen_id, rejected_id, chosen_score, rejected_score (+ optional weight, tier).
- A *pool filter* `f(pool, ctx, **params) -> (pool, drops)` runs before the rule (e.g. near-duplicate responses).
- A *pair filter* `f(pairs, ctx, **params) -> (pairs, drops)` runs after it, in config order (margins, CHES,
  length control); orderings (curricula) are pair filters that set `tier` and drop nothing.
`select` drops ties and records every unused candidate, so nothing leaves without a reason.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pandas as pd

from pipelines.selection import common

RULES = {
    "max_min": "pipelines.selection.max_min:max_min",
    "mu_2sigma": "pipelines.selection.mu_2sigma:mu_2sigma",
    "max_random": "pipelines.selection.max_random:max_random",
    "all_ranked": "pipelines.selection.all_ranked:all_ranked",
    "dstc": "pipelines.selection.dstc:dstc",
}
POOL_FILTERS: dict[str, str] = {
    "dedup_responses": "pipelines.selection.dedup:dedup_responses",
    "dedup_prompts": "pipelines.selection.dedup:dedup_prompts",
}
PAIR_FILTERS: dict[str, str] = {
    "margin": "pipelines.selection.margin:margin",
    "curry_tiers": "pipelines.selection.curry_tiers:curry_tiers",
    "length": "pipelines.selection.length:length",
    "ches": "pipelines.selection.ches:ches",
    "implicit_margin": "pipelines.selection.implicit_margin:implicit_margin",
    "dual_margin": "pipelines.selection.dual_margin:dual_margin",
    "diverse_subset": "pipelines.selection.diversity:diverse_subset",
}


@dataclass
class SelectionContext:
    """What filters may need beyond the pool: texts, token counts, prompts (read-only)."""
    candidates: pd.DataFrame   # CANDIDATES table
    prompts: pd.DataFrame      # PROMPTS table


def _load(registry: dict[str, str], name: str, kind: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)


def get_rule(name: str):
    return _load(RULES, name, "selection rule")


def select(pool: pd.DataFrame, rule: str, params: dict | None = None, ctx: SelectionContext | None = None,
           pool_filters=(), pair_filters=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs index frame, drops). Pairs carry ids and scores; `stages.materialize_pairs` adds the messages.

    pool_filters / pair_filters: sequences of (name, params)."""
    valid, drops = common.prepare(pool, rule)
    all_drops = [drops]
    for name, fparams in pool_filters:
        valid, more = _load(POOL_FILTERS, name, "pool filter")(valid, ctx, **(fparams or {}))
        all_drops.append(more)
    if pool_filters:  # a pool filter may leave a prompt with < 2 responses or no spread: re-check
        valid, more = common.prepare(valid, rule)
        all_drops.append(more)
    pairs = get_rule(rule)(valid, **(params or {})) if len(valid) else common.empty_pairs()
    pairs, more = common.finish(pool, valid, pairs, rule)
    all_drops.append(more)
    for name, fparams in pair_filters:
        before = pairs
        pairs, more = _load(PAIR_FILTERS, name, "pair filter")(pairs, ctx, **(fparams or {}))
        all_drops.append(more)
        common.check_accounted(before, pairs, more, name)
    nonempty = [d for d in all_drops if len(d)]
    return pairs, pd.concat(nonempty, ignore_index=True) if nonempty else drops
