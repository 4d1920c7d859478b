"""Batched per-response statistics of a causal LM: the sum of last-layer hidden states over the positions that
predict the response, and the response's log-probability. The CHES filter (Razin et al. 2024, "Unintentional
Unalignment: Likelihood Displacement in DPO") uses the first, the implicit DPO margin (Rafailov et al. 2023) the
second; both come from one forward pass.

Tokenisation is TRL's DPOTrainer for conversational data: prompt ids = chat template of the prompt with the
generation prompt; full ids = chat template of prompt + assistant turn; the response is full[len(prompt):], so it
ends with the template's end-of-turn tokens (for SmolLM2 "<|im_end|>\\n"), exactly what DPO trains on.

Positions: the state at t predicts token t+1. The response occupies P..P+L-1 (P prompt tokens), so the states
that predict it are P-1 .. P+L-2: from the last prompt token up to the token before the end, as in the
reference implementation (princeton-nlp/unintentional-unalignment, ches/ches.py).

Batching: sequences are sorted by length and right-padded. A causal model's states at real positions do not
see padding to their right and keep position ids 0..n-1, so batched values equal batch-size-1 values up to
floating-point reassociation (tests/pairs/selection/test_model_filters.py checks 1e-4).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.core.config import EMBEDDED_MODEL
from pipelines.core.devices import device_and_dtype
from pipelines.core.models import resolve_model


@dataclass(frozen=True, eq=False)
class Policy:
    """A loaded causal LM with its tokenizer (the model a filter scores pairs under)."""
    name: str
    model: Any
    tokenizer: Any
    device: str


@functools.lru_cache(maxsize=2)  # ches then implicit_margin on the same policy: one load
def _load(path: str, device: str, dtype: str) -> Policy:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, torch_dtype = device_and_dtype(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return Policy(name=path, model=model, tokenizer=tokenizer, device=device)


def load_policy(model: "str | Policy" = EMBEDDED_MODEL, device: str = "auto", dtype: str = "auto") -> Policy:
    """A model name/path (or "embedded:...") -> Policy; a Policy passes through (tests, benchmarks)."""
    if isinstance(model, Policy):
        return model
    return _load(resolve_model(model), device, dtype)  # keyed by the resolved path: one load per model


def encode(tokenizer, prompt: list[dict], response: str) -> tuple[list[int], int]:
    """(prompt + response token ids, number of prompt tokens), tokenised as TRL's DPOTrainer does."""
    prompt = [dict(m) for m in prompt]
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=True,
                                         return_dict=False)
    prompt_ids, full = list(prompt_ids), list(full)
    if full[:len(prompt_ids)] != prompt_ids:  # TRL warns and slices anyway; so do we, loudly
        warnings.warn("chat template: the prompt's tokens are not a prefix of prompt + response; "
                      "slicing at the prompt length as TRL does", stacklevel=2)
    if not prompt_ids or len(full) <= len(prompt_ids):
        raise ValueError(f"cannot score a response of {len(full) - len(prompt_ids)} tokens after "
                         f"{len(prompt_ids)} prompt tokens")
    return full, len(prompt_ids)


def response_stats(policy: Policy, prompts: list[list[dict]], responses: list[str], *, hidden: bool = False,
                   logps: bool = False, batch_size: int = 8) -> dict[str, np.ndarray]:
    """For each (prompt, response): n_tokens (|y|), and on request hidden_sum (sum of the last-layer states that
    predict y, shape n x d, float64) and logp (log pi(y|x), float64). Sequences run longest first in batches of
    batch_size (similar lengths share a batch: little padding)."""
    import torch

    encoded = [encode(policy.tokenizer, p, r) for p, r in zip(prompts, responses)]
    n = len(encoded)
    out = {"n_tokens": np.array([len(ids) - p for ids, p in encoded], dtype=np.int64)}
    if hidden:
        out["hidden_sum"] = np.zeros((n, policy.model.config.get_text_config().hidden_size), dtype=np.float64)
    if logps:
        out["logp"] = np.zeros(n, dtype=np.float64)
    if n == 0 or not (hidden or logps):
        return out
    pad_id = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else 0
    order = sorted(range(n), key=lambda i: -len(encoded[i][0]))
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        predicts = torch.zeros((len(rows), width), dtype=torch.bool)  # state t predicts a response token
        for b, i in enumerate(rows):
            seq, n_prompt = encoded[i]
            ids[b, :len(seq)] = torch.tensor(seq)
            attention[b, :len(seq)] = 1
            predicts[b, n_prompt - 1:len(seq) - 1] = True
        ids, attention, predicts = (t.to(policy.device) for t in (ids, attention, predicts))
        with torch.inference_mode():
            if logps:
                res = policy.model(input_ids=ids, attention_mask=attention, output_hidden_states=hidden,
                                   use_cache=False)
                states = res.hidden_states[-1] if hidden else None
            else:  # no logits needed: the base model alone (its output is what the LM head reads)
                res = policy.model.base_model(input_ids=ids, attention_mask=attention, use_cache=False)
                states = res.last_hidden_state
            if hidden:
                sums = torch.einsum("bt,btd->bd", predicts.float(), states.float())
                out["hidden_sum"][rows] = sums.double().cpu().numpy()
            if logps:
                targets = torch.roll(ids, shifts=-1, dims=1)[predicts]  # token t+1 for every predicting state t
                logits = res.logits[predicts].float()                  # (response tokens in batch) x vocab
                token_logp = logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
                row_of = predicts.nonzero()[:, 0]
                per_row = torch.zeros(len(rows), dtype=torch.float64, device=token_logp.device)
                per_row.index_add_(0, row_of, token_logp.double())
                out["logp"][rows] = per_row.cpu().numpy()
    return out


def unique_sequences(pairs, ctx) -> tuple[list[tuple[str, str]], list[list[dict]], list[str]]:
    """The distinct (prompt_id, candidate_id) of the pairs' chosen and rejected sides, with their prompt
    messages and texts: a response used by several pairs is scored once."""
    if ctx is None or ctx.candidates is None:
        raise ValueError("this filter needs the SelectionContext (candidates and prompts)")
    keys = list(dict.fromkeys(list(zip(pairs["prompt_id"], pairs["chosen_id"])) +
                              list(zip(pairs["prompt_id"], pairs["rejected_id"]))))
    text = ctx.candidates.set_index("candidate_id")["text"]
    messages = ctx.prompts.set_index("prompt_id")["messages"]
    return keys, [list(messages.loc[p]) for p, _ in keys], [str(text.loc[c]) for _, c in keys]


def pair_stats(pairs, ctx, policy: Policy, *, hidden: bool = False, logps: bool = False,
               batch_size: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """response_stats for the chosen and rejected side of every pair: {"chosen": {...}, "rejected": {...}},
    each array aligned with the pairs' rows."""
    keys, prompts, texts = unique_sequences(pairs, ctx)
    stats = response_stats(policy, prompts, texts, hidden=hidden, logps=logps, batch_size=batch_size)
    where = {k: i for i, k in enumerate(keys)}
    out = {}
    for side in ("chosen", "rejected"):
        idx = np.array([where[k] for k in zip(pairs["prompt_id"], pairs[f"{side}_id"])], dtype=np.int64)
        out[side] = {name: values[idx] for name, values in stats.items()}
    return out
