"""Pair selection: a scored pool (one row per candidate with a `reward`) -> pairs + drop rows.

Each rule is one module with one function `rule(pool, **params) -> DataFrame` over the *valid* pool (errors,
prompts with < 2 valid responses and zero-variance prompts are already dropped by `common.prepare`). A rule
returns one row per pair: prompt_id, chosen_id, rejected_id, chosen_score, rejected_score (+ optional weight,
tier). `select` then drops ties and records every unused candidate, so nothing leaves without a reason.
"""

from __future__ import annotations

import importlib

import pandas as pd

from pipelines.selection import common

RULES = {
    "max_min": "pipelines.selection.max_min:max_min",
    "mu_2sigma": "pipelines.selection.mu_2sigma:mu_2sigma",
}


def get_rule(name: str):
    if name not in RULES:
        raise ValueError(f"unknown selection rule {name!r}; known: {sorted(RULES)}")
    module, attr = RULES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def select(pool: pd.DataFrame, rule: str, params: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs index frame, drops). Pairs carry ids and scores; `stages.materialize_pairs` adds the messages."""
    valid, drops = common.prepare(pool, rule)
    pairs = get_rule(rule)(valid, **(params or {})) if len(valid) else common.empty_pairs()
    pairs, more = common.finish(pool, valid, pairs, rule)
    return pairs, pd.concat([drops, more], ignore_index=True)
