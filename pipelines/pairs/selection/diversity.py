"""Pair filter `diverse_subset`: a quality + diversity subset of the pairs (AEPO-style).

AEPO (Jinnai & Honda 2024, "Annotation-Efficient Preference Optimization for Language Model Alignment",
arXiv:2405.13541) builds preference data from a subset that is both high-quality and diverse instead of the
top-quality pairs alone. Here the subset is chosen greedily by maximal marginal relevance (Carbonell &
Goldstein 1998): each step adds the pair maximising

    quality(j) + diversity_weight * (1 - max_{s in selected} sim(j, s))

quality = the reward margin min-max scaled to [0, 1] over the pairs (so diversity_weight is scale-free), sim =
cosine of pair embeddings. A pair's embedding is the concatenation of the unit embeddings of its prompt, chosen
and rejected texts over sqrt(3), so sim(j, s) is the mean of the three cosines. Cost: keep x n x d (fine for
tens of thousands of pairs; the update runs on GPU when there is one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.pairs.selection.embeddings import EMBEDDED_ENCODER, embed, prompt_text
from pipelines.pairs.selection.filter_drops import pair_filter_drops, top_count


def pair_embeddings(pairs: pd.DataFrame, ctx, model: str = EMBEDDED_ENCODER, batch_size: int = 64) -> np.ndarray:
    if ctx is None or ctx.candidates is None:
        raise ValueError("diverse_subset needs the SelectionContext (prompts and candidate texts)")
    text = ctx.candidates.set_index("candidate_id")["text"]
    messages = ctx.prompts.set_index("prompt_id")["messages"]
    prompt_ids = list(dict.fromkeys(pairs["prompt_id"]))
    cand_ids = list(dict.fromkeys(list(pairs["chosen_id"]) + list(pairs["rejected_id"])))
    vectors = embed([prompt_text(messages.loc[p]) for p in prompt_ids] + [str(text.loc[c]) for c in cand_ids],
                    model, batch_size)
    row = {k: i for i, k in enumerate(prompt_ids + cand_ids)}  # ids are hashes of different kinds: no clash
    parts = [vectors[[row[k] for k in pairs[col]]] for col in ("prompt_id", "chosen_id", "rejected_id")]
    return np.concatenate(parts, axis=1) / np.sqrt(3.0)


def mmr_order(quality: np.ndarray, vectors: np.ndarray, k: int, diversity_weight: float) -> list[int]:
    """Indices of the k greedily selected items, in selection order (ties: lowest index)."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q = torch.as_tensor(quality, dtype=torch.float64, device=device)
    v = torch.as_tensor(vectors, dtype=torch.float64, device=device)
    max_sim = torch.full_like(q, -np.inf)
    chosen = torch.zeros(len(q), dtype=torch.bool, device=device)
    picked: list[int] = []
    for _ in range(min(k, len(q))):
        gain = q + diversity_weight * (1.0 - max_sim) if picked else q.clone()
        gain[chosen] = -np.inf
        j = int(torch.argmax(gain))  # first maximum: lowest index on ties
        picked.append(j)
        chosen[j] = True
        max_sim = torch.maximum(max_sim, v @ v[j])
    return picked


def diverse_subset(pairs: pd.DataFrame, ctx, keep: int | None = None, keep_fraction: float | None = None,
                   diversity_weight: float = 1.0, model: str = EMBEDDED_ENCODER,
                   batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep `keep` pairs, or `keep_fraction` of them (default 0.5); the rest are dropped as `not_diverse`.
    The kept pairs carry `diversity_rank` (0 = picked first)."""
    if keep is not None and keep_fraction is not None:
        raise ValueError("diverse_subset: give keep or keep_fraction, not both")
    pairs = pairs.reset_index(drop=True)
    n = len(pairs)
    k = min(int(keep), n) if keep is not None else top_count(n, 0.5 if keep_fraction is None else keep_fraction)
    margin = pairs["margin"].to_numpy(dtype=np.float64) if n else np.zeros(0)
    spread = margin.max() - margin.min() if n else 0.0
    quality = (margin - margin.min()) / spread if spread > 0 else np.ones(n)
    order = mmr_order(quality, pair_embeddings(pairs, ctx, model, batch_size), k, diversity_weight) if n else []
    rank = np.full(n, -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    kept = rank >= 0
    details = [f"margin {m:.6g} not among the {k} pairs picked by quality + diversity "
               f"(weight {diversity_weight:g})" for m in margin]
    out = pairs.assign(diversity_rank=rank)[kept].reset_index(drop=True)  # input order kept
    return out, pair_filter_drops(pairs, kept, "not_diverse", details, "diverse_subset")
