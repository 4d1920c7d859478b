"""The stages of build_pairs: each takes frames (and a component) and returns frames. No Prefect, no I/O.

    sample_stage(prompts, sampler, cfg)            -> candidates, drops
    score_stage(candidates, prompts, scorers)      -> scores
    select_stage(candidates, scores, prompts, ...) -> pairs, drops
"""

from __future__ import annotations

import pandas as pd

from pipelines.core import ids, schema
from pipelines.pairs import rewards, selection


def sample_stage(prompts: pd.DataFrame, sampler, cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """k responses per prompt in one engine call; prompts that do not fit the context, or that the sampler could
    not sample, become drops."""
    fits, drops = [], schema.DropLog()
    for row in prompts.itertuples(index=False):
        n_tokens = sampler.prompt_tokens(list(row.messages))
        if n_tokens + cfg.max_new_tokens > sampler.max_context:
            drops.add(row.prompt_id, "sample", "prompt_too_long", f"{row.source}:{row.row}: {n_tokens} prompt tokens "
                      f"+ {cfg.max_new_tokens} new > context {sampler.max_context}")
        else:
            fits.append(row)
    rows = []
    if fits:
        seeds = [ids.prompt_seed(cfg.seed, r.prompt_id) for r in fits]
        outputs = sampler.generate([list(r.messages) for r in fits], cfg.k, seeds)
        for r, seed, gens in zip(fits, seeds, outputs):
            if not gens:  # samplers.NoSamples: the endpoint failed for this prompt; a rerun asks again
                drops.add(r.prompt_id, "sample", "sample_error", f"{r.source}:{r.row}: "
                          f"{getattr(gens, 'error', None) or 'the sampler returned no responses'}")
            for j, g in enumerate(gens):
                rows.append(dict(
                    candidate_id=ids.candidate_id(r.prompt_id, sampler.model_name, seed, j, g.text),
                    prompt_id=r.prompt_id, sample_index=j, text=g.text, finish_reason=g.finish_reason,
                    prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
                    logprob_sum=g.logprob_sum, sampler=sampler.name, model=sampler.model_name, seed=seed))
    return schema.frame(rows, schema.CANDIDATES), drops.frame()


def score_stage(candidates: pd.DataFrame, prompts: pd.DataFrame, scorers: list) -> pd.DataFrame:
    """Every scorer over every candidate; one SCORES row per (candidate, scorer)."""
    parts = []
    for scorer in scorers:
        out = scorer.score(candidates, prompts)
        if len(out) != len(candidates) or set(out["candidate_id"]) != set(candidates["candidate_id"]):
            raise RuntimeError(f"scorer {scorer.name} returned {len(out)} rows for {len(candidates)} candidates")
        parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else schema.empty(schema.SCORES)


def select_stage(candidates: pd.DataFrame, scores: pd.DataFrame, prompts: pd.DataFrame, selection_cfg,
                 weights: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole selection in memory. build.finalize runs the same steps batch by batch (pipelines/pairs/
    finalize.py); this is the reference it is tested against, and the one-call form for notebooks and tests."""
    pool = rewards.combine(candidates, scores, weights, selection_cfg.normalize)
    index, drops = select_index(pool, candidates, prompts, selection_cfg)
    return materialize_pairs(index, candidates, prompts, selection_cfg.rule), drops


def select_index(pool: pd.DataFrame, candidates: pd.DataFrame | None, prompts: pd.DataFrame | None, selection_cfg,
                 pool_filters=None, pair_filters=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """selection.select over a scored pool: (pair index: ids and scores, drops). pool_filters / pair_filters:
    (name, params) lists (default: the config's); candidates and prompts are what the filters may look up."""
    ctx = selection.SelectionContext(candidates=candidates, prompts=prompts)
    return selection.select(
        pool, selection_cfg.rule, selection_cfg.params, ctx,
        pool_filters=filter_list(selection_cfg.pool_filters) if pool_filters is None else pool_filters,
        pair_filters=filter_list(selection_cfg.pair_filters) if pair_filters is None else pair_filters)


def filter_list(filters) -> list[tuple[str, dict]]:
    return [(f.name, f.params) for f in filters]


def materialize_pairs(index: pd.DataFrame, candidates: pd.DataFrame, prompts: pd.DataFrame,
                      rule: str) -> pd.DataFrame:
    """Pair ids -> TRL-ready rows: prompt/chosen/rejected as conversational message lists + provenance."""
    if index.empty:
        return schema.empty(schema.PAIRS)
    text = candidates.set_index("candidate_id")["text"]
    model = candidates.set_index("candidate_id")["model"]
    messages = prompts.set_index("prompt_id")["messages"]
    out = pd.DataFrame({
        "pair_id": [ids.stable_hash("pair", c, r) for c, r in zip(index["chosen_id"], index["rejected_id"])],
        "prompt_id": index["prompt_id"].to_numpy(),
        "prompt": [list(m) for m in messages.loc[index["prompt_id"]]],
        "chosen": [[{"role": "assistant", "content": t}] for t in text.loc[index["chosen_id"]]],
        "rejected": [[{"role": "assistant", "content": t}] for t in text.loc[index["rejected_id"]]],
        "chosen_id": index["chosen_id"].to_numpy(), "rejected_id": index["rejected_id"].to_numpy(),
        "chosen_score": index["chosen_score"].to_numpy(), "rejected_score": index["rejected_score"].to_numpy(),
        "margin": index["margin"].to_numpy(), "rule": rule, "weight": index["weight"].to_numpy(),
        "tier": index["tier"].to_numpy(), "model": model.loc[index["chosen_id"]].to_numpy(),
    })
    for column in schema.PAIR_FILTER_SCORES:  # scores a pair filter computed (CHES, implicit margin) stay
        if column in index:
            out[column] = index[column].to_numpy(dtype="float64")
    return out
