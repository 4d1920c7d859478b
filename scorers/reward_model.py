"""Reward model: any sequence-classification reward model (AutoModelForSequenceClassification) by name or path.

    scorers: [{name: reward_model, params: {model: Skywork/Skywork-Reward-V2-Llama-3.1-8B, batch_size: 16}}]

Input format, the way reward models are trained:
- a model whose tokenizer has a chat template scores the conversation prompt + {"role": "assistant",
  "content": response}, rendered by that template (tokenized without extra special tokens: templates carry
  their own BOS);
- a model without one (OpenAssistant's DeBERTa reward models, BERT-style classifiers) gets the plain format
  its card shows: the tokenizer's text pair (prompt text, response). The prompt text is the user message, or
  "role: content" lines when the conversation has several messages.
A sequence longer than the model accepts is an error row (truncating it would score a different response).

Heads: one output -> the score. Several (num_labels > 1, multi-objective models such as ArmoRM's reward
heads) -> `objective_weights` (one per head) give the weighted sum; all head values are kept in details.
`output_field` picks another output of a custom model (ArmoRM's `score`, with trust_remote_code: true).

Backends: `transformers` (default; length-sorted batches, right padding, batch-size halving on out-of-memory,
bf16 on GPU) or `vllm` (the pooling runner, for GPU throughput); see reward_backends.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scorers import score_rows

ENGINES = {
    "transformers": "scorers.reward_backends:TransformersRewardEngine",
    "vllm": "scorers.reward_backends:VLLMRewardEngine",
}


def prompt_text(messages: list[dict]) -> str:
    """The prompt as plain text for models without a chat template."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def encode(tokenizer, messages: list[dict], response: str) -> dict:
    """Token ids of (prompt, response) in the model's expected format."""
    if getattr(tokenizer, "chat_template", None):
        conversation = list(messages) + [{"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        enc = tokenizer(text, add_special_tokens=False)
    else:
        enc = tokenizer(prompt_text(messages), response)
    return {k: list(v) for k, v in enc.items() if k in ("input_ids", "token_type_ids")}


class RewardModelScorer:
    name = "reward_model"

    def __init__(self, model: str, backend: str = "transformers", batch_size: int = 16,
                 max_length: int | None = None, objective_weights: list[float] | None = None,
                 output_field: str = "logits", device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, engine_kwargs: dict | None = None):
        if backend not in ENGINES:
            raise ValueError(f"unknown reward model backend {backend!r}; known: {sorted(ENGINES)}")
        self.model_name, self.backend, self.batch_size = model, backend, batch_size
        self.max_length, self.objective_weights = max_length, objective_weights
        self.output_field, self.device, self.dtype = output_field, device, dtype
        self.trust_remote_code, self.engine_kwargs = trust_remote_code, dict(engine_kwargs or {})
        self._engine = self._tokenizer = None

    def _load(self):
        if self._engine is None:
            from transformers import AutoTokenizer

            from pipelines.core.models import resolve_model
            from pipelines.core.registry import lookup
            path = resolve_model(self.model_name)
            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
            engine_cls = lookup(ENGINES, self.backend, "reward model backend")
            kwargs = {"dtype": self.dtype, **self.engine_kwargs}
            if self.backend == "transformers":
                kwargs.update(device=self.device, output_field=self.output_field)
            self._engine = engine_cls(path, trust_remote_code=self.trust_remote_code, **kwargs)
        return self._engine, self._tokenizer

    def _limit(self, engine, tokenizer) -> int:
        limits = [self.max_length, engine.max_length, tokenizer.model_max_length]
        return min(int(x) for x in limits if x and x < 10**9)  # tokenizers without a limit report ~1e30

    def reduce(self, head: np.ndarray) -> tuple[float, dict]:
        """Head outputs of one candidate -> (score, details)."""
        values = [float(x) for x in head]
        if len(values) == 1:
            return values[0], {"head": values}
        if self.objective_weights is None or len(self.objective_weights) != len(values):
            raise ValueError(f"reward model {self.model_name} has {len(values)} outputs: set params.objective_weights"
                             f" to {len(values)} weights (got {self.objective_weights})")
        return float(np.dot(values, self.objective_weights)), {"head": values}

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        engine, tokenizer = self._load()
        limit = self._limit(engine, tokenizer)
        messages = prompts.set_index("prompt_id")["messages"]
        encodings, errors = [], []
        for pid, text in zip(candidates["prompt_id"], candidates["text"]):
            enc = encode(tokenizer, [dict(m) for m in messages[pid]], text)
            n = len(enc["input_ids"])
            encodings.append(enc)
            errors.append(None if n <= limit else f"{n} tokens > reward model limit {limit} (not truncated)")
        todo = [i for i, e in enumerate(errors) if e is None]
        heads = dict(zip(todo, engine.run([encodings[i] for i in todo], self.batch_size)))
        scores, details = [], []
        for i, enc in enumerate(encodings):
            head = heads.get(i)
            if isinstance(head, str):
                errors[i] = head
            if errors[i] is not None:
                scores.append(None), details.append({"tokens": len(enc["input_ids"])})
                continue
            value, detail = self.reduce(head)
            detail["tokens"] = len(enc["input_ids"])
            if not np.isfinite(value):  # an overflow (fp16/bf16) is not a reward
                errors[i] = f"reward model returned {value}"
                value = None
            scores.append(value), details.append(detail)
        return score_rows(candidates, self.name, scores, details, errors)
