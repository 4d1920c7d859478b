"""Engines that run a sequence-classification reward model over tokenized inputs: transformers or vLLM pooling.

An engine takes a list of encodings ({"input_ids": [...], maybe "token_type_ids": [...]}) and returns, for each,
the head's outputs (a float vector of num_labels values) or an error string. The scorer (reward_model.py) owns
the chat formatting and the reduction of several heads to one number; engines only run the model.

transformers engine:
- batches are sorted by length, so a batch holds sequences of similar length (little padding, and the work
  grows with the sum of lengths instead of batch x longest);
- right padding, built here: a right-padded row sees exactly the positions it sees alone (left padding shifts
  the positions of models with absolute position embeddings), so a batch scores like one at a time;
- HF decoder classifiers pool at "the rightmost token that is not pad_token_id"; many chat models use eos as
  pad, and a templated conversation may end with it, which would pool one token early. So each batch is padded
  with an id that no row ends with, and the model is told that id;
- on CUDA out-of-memory the batch size is halved and the batch retried (down to 1; an item that does not fit
  alone gets an error, the others are scored); bf16 on GPU, float32 on CPU by default.
"""

from __future__ import annotations

import logging

from pipelines.core.devices import device_and_dtype

log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    import torch
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def pad_right(encodings: list[dict], pad_id: int):
    """Right-pad a list of encodings into tensors (input_ids with pad_id, attention_mask and token types with 0)."""
    import torch
    width = max(len(e["input_ids"]) for e in encodings)
    batch = {"input_ids": torch.full((len(encodings), width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(encodings), width), dtype=torch.long)}
    if "token_type_ids" in encodings[0]:
        batch["token_type_ids"] = torch.zeros((len(encodings), width), dtype=torch.long)
    for row, e in enumerate(encodings):
        n = len(e["input_ids"])
        batch["input_ids"][row, :n] = torch.tensor(e["input_ids"])
        batch["attention_mask"][row, :n] = 1
        if "token_type_ids" in batch:
            batch["token_type_ids"][row, :n] = torch.tensor(e["token_type_ids"])
    return batch


def safe_pad_id(encodings: list[dict], preferred: int | None) -> int:
    """preferred, unless some row ends with it (pooling would then skip that row's last token)."""
    last_tokens = {e["input_ids"][-1] for e in encodings}
    if preferred is not None and preferred not in last_tokens:
        return preferred
    return next(i for i in range(len(last_tokens) + 1) if i not in last_tokens)


class TransformersRewardEngine:
    name = "transformers"

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                 output_field: str = "logits", model=None, **model_kwargs):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.device, torch_dtype = device_and_dtype(device, dtype)
        if model is None:  # a ready model may be passed (benchmarks, tests)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch_dtype, trust_remote_code=trust_remote_code, **model_kwargs)
        self.model = model.to(self.device).eval()
        self.output_field = output_field
        self.pad_id = self.model.config.pad_token_id
        torch.set_grad_enabled(False)

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def max_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def forward(self, encodings: list[dict]):
        """Head outputs for one batch, as a float32 numpy array [batch, num_labels]."""
        pad_id = safe_pad_id(encodings, self.pad_id)
        self.model.config.pad_token_id = pad_id
        batch = {k: v.to(self.device) for k, v in pad_right(encodings, pad_id).items()}
        out = self.model(**batch)
        values = getattr(out, self.output_field) if hasattr(out, self.output_field) else out[self.output_field]
        return values.float().reshape(len(encodings), -1).cpu().numpy()

    def run(self, encodings: list[dict], batch_size: int) -> list:
        """One output per encoding: a numpy vector, or an error string. Length-sorted batches, OOM halving."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]["input_ids"]), reverse=True)
        results: list = [None] * len(encodings)
        start, size = 0, max(1, batch_size)
        while start < len(order):  # longest first: an out-of-memory shows up on the first batch, not the last
            chunk = order[start:start + size]
            try:
                values = self.forward([encodings[i] for i in chunk])
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; anything else is a bug: raise
                if not is_out_of_memory(e):
                    raise
                self._free_memory()
                if size > 1:
                    size //= 2
                    log.warning("reward model out of memory; batch size halved to %d", size)
                    continue
                tokens = len(encodings[chunk[0]]["input_ids"])
                results[chunk[0]] = f"out of memory on a single sequence of {tokens} tokens"
                start += 1
                continue
            for i, v in zip(chunk, values):
                results[i] = v
            start += len(chunk)
        self.batch_size_used = size
        return results

    @staticmethod
    def _free_memory():
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMRewardEngine:
    """vLLM's pooling runner (`LLM(runner="pooling")` + `classify`/`reward`): vLLM batches and schedules itself.

    Token ids go in as TokensPrompt, so the scorer's formatting and length checks are the same as with
    transformers. `classify` would apply the classifier's activation (softmax/sigmoid); a reward is the raw
    head value, so the activation is switched off. batch_size is unused: vLLM schedules by tokens itself.
    """
    name = "vllm"

    def __init__(self, path: str, dtype: str = "auto", trust_remote_code: bool = False, **engine_kwargs):
        from vllm import LLM

        kwargs = dict(engine_kwargs)
        if dtype != "auto":
            kwargs.setdefault("dtype", dtype)
        self.llm = LLM(model=path, runner="pooling", trust_remote_code=trust_remote_code, **kwargs)
        config = self.llm.llm_engine.model_config
        self.num_labels = int(getattr(config.hf_config, "num_labels", 1))
        self.max_length = int(config.max_model_len)

    def run(self, encodings: list[dict], batch_size: int) -> list:
        import numpy as np
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        prompts = [TokensPrompt(prompt_token_ids=list(e["input_ids"])) for e in encodings]
        # raw head values (a reward), not the softmax/sigmoid a classifier would apply
        outputs = self.llm.classify(prompts, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [np.asarray(o.outputs.probs, dtype=np.float32).reshape(-1) for o in outputs]
