"""Pool filters `dedup_responses` and `dedup_prompts`: near-duplicates by sentence-embedding cosine similarity.

Two responses that say the same thing in other words make a pair with no preference signal but a reward gap
from scorer noise; two near-identical prompts over-weight one problem. Semantic dedup (as in SemDeDup, Abbas et
al. 2023, "SemDeDup: Data-efficient learning at web-scale through semantic deduplication") on embeddings
catches both; the threshold is a cosine on unit-norm embeddings (see embeddings.py for the default encoder).

- dedup_responses: inside each prompt, responses by reward (best first, then sample_index) are kept unless
  one already kept is within the threshold; the others are dropped (`duplicate_response`), so no pair ever
  holds two responses the model embeds as the same.
- dedup_prompts: across the dataset, prompts in input order; a prompt within the threshold of an earlier kept
  one loses all its candidates, with one prompt-level drop row (`duplicate_prompt`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.pairs.selection.embeddings import EMBEDDED_ENCODER, embed, prompt_text


def greedy_keep(vectors: np.ndarray, threshold: float, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """Walk the rows in order; keep a row unless a kept earlier row has cosine >= threshold.
    Returns (keep mask, index of the kept row that matched or -1, that cosine). Similarities are computed in
    chunks of rows against the earlier rows, so memory is chunk x n, never n x n."""
    n = len(vectors)
    keep = np.ones(n, dtype=bool)
    match = np.full(n, -1, dtype=np.int64)
    match_sim = np.full(n, np.nan)
    for start in range(0, n, chunk):
        block = vectors[start:start + chunk] @ vectors[:start + chunk].T  # rows vs everything up to them
        for local in range(block.shape[0]):
            i = start + local
            sims = block[local, :i]
            close = np.flatnonzero((sims >= threshold) & keep[:i])
            if len(close):
                j = close[np.argmax(sims[close])]
                keep[i], match[i], match_sim[i] = False, j, sims[j]
    return keep, match, match_sim


def dedup_responses(pool: pd.DataFrame, ctx, threshold: float = 0.95, model: str = EMBEDDED_ENCODER,
                    batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    if ctx is None or ctx.candidates is None:
        raise ValueError("dedup_responses needs the SelectionContext (candidate texts)")
    if pool.empty:
        return pool, schema.empty(schema.DROPS)
    text = ctx.candidates.set_index("candidate_id")["text"]
    order = pool.sort_values(["prompt_id", "reward", "sample_index"], ascending=[True, False, True],
                             kind="stable").reset_index(drop=True)
    vectors = embed([str(t) for t in text.loc[order["candidate_id"]]], model, batch_size)
    keep = np.ones(len(order), dtype=bool)
    details = [""] * len(order)
    for _, rows in order.groupby("prompt_id", sort=False).indices.items():
        k, match, sim = greedy_keep(vectors[rows], threshold)
        keep[rows] = k
        for local in np.flatnonzero(~k):
            kept = order.iloc[rows[match[local]]]
            details[rows[local]] = (f"cosine {sim[local]:.4f} >= {threshold:g} to {kept['candidate_id']} "
                                    f"(reward {kept['reward']:.6g} vs {order['reward'].iloc[rows[local]]:.6g})")
    dropped = order[~keep]
    drops = schema.drop_rows(dropped["prompt_id"], "filter", "duplicate_response",
                             [d for d, k in zip(details, keep) if not k], rule="dedup_responses",
                             candidate_ids=dropped["candidate_id"])
    kept_ids = set(order.loc[keep, "candidate_id"])
    return pool[pool["candidate_id"].isin(kept_ids)], drops


def dedup_prompts(pool: pd.DataFrame, ctx, threshold: float = 0.95, model: str = EMBEDDED_ENCODER,
                  batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    if ctx is None or ctx.prompts is None:
        raise ValueError("dedup_prompts needs the SelectionContext (prompt messages)")
    present = set(pool["prompt_id"])
    prompts = ctx.prompts[ctx.prompts["prompt_id"].isin(present)].drop_duplicates("prompt_id")  # input order
    if prompts.empty:
        return pool, schema.empty(schema.DROPS)
    vectors = embed([prompt_text(m) for m in prompts["messages"]], model, batch_size)
    keep, match, sim = greedy_keep(vectors, threshold)
    ids = prompts["prompt_id"].to_numpy()
    where = [f"{s}:{r}" for s, r in zip(prompts["source"], prompts["row"])]
    gone = np.flatnonzero(~keep)
    drops = schema.drop_rows(ids[gone], "filter", "duplicate_prompt",
                             [f"{where[i]}: cosine {sim[i]:.4f} >= {threshold:g} to prompt {ids[match[i]]} "
                              f"({where[match[i]]})" for i in gone], rule="dedup_prompts")
    return pool[~pool["prompt_id"].isin(set(ids[gone]))], drops
