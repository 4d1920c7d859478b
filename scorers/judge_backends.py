"""Where an LLM judge's prompts go: the project's samplers (transformers, vllm) or an OpenAI-compatible endpoint.

A backend answers `complete(conversations, json_schema=None) -> list[Reply]`, one reply per conversation, in
order. A reply is text or an error; it is never a made-up verdict (the judge scorers turn errors into error
rows).

- `transformers` / `vllm`: the sampler of `samplers/` for the judge model, via `get_sampler` (loaded once per
  process; the embedded SmolLM2 by default). Judging is greedy in effect: the samplers require T > 0, and at
  T = 1e-5 the top token wins. With `vllm`, `json_schema` constrains decoding (vLLM structured outputs).
- `openai`: any OpenAI-compatible /chat/completions server (`vllm serve`, hosted APIs), through the HTTP client
  of the openai sampler (samplers/openai_client.py): bounded concurrency, a per-request timeout, retries with
  exponential backoff on 429, 5xx, timeouts and connection errors (Retry-After honoured, capped), and an optional
  request cache (`cache_dir`). The API key is read from the environment variable named by `api_key_env`, never
  from the config file. A malformed reply is an error, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.core import ids
from pipelines.core.config import EMBEDDED_MODEL

GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class Reply:
    text: str | None
    error: str | None = None


class SamplerJudgeBackend:
    def __init__(self, sampler: str = "transformers", model: str = EMBEDDED_MODEL, max_new_tokens: int = 512,
                 temperature: float = GREEDY_TEMPERATURE, seed: int = 0, dtype: str = "auto",
                 batch_prompts: int = 8, engine_kwargs: dict | None = None):
        from pipelines.core.config import SamplerConfig
        # k is unused here (the judge asks for one reply); SamplerConfig only requires it to be >= 2
        self.cfg = SamplerConfig(name=sampler, model=model, k=2, temperature=temperature, top_p=1.0,
                                 max_new_tokens=max_new_tokens, seed=seed, dtype=dtype,
                                 batch_prompts=batch_prompts, engine_kwargs=engine_kwargs or {})

    def complete(self, conversations: list[list[dict]], json_schema: dict | None = None) -> list[Reply]:
        from samplers import get_sampler
        sampler = get_sampler(self.cfg)
        if json_schema is not None:
            if sampler.name != "vllm":
                raise ValueError("structured (JSON schema) judging needs the vllm or openai judge backend")
            return self._structured(sampler, conversations, json_schema)
        seeds = [int(ids.stable_hash("judge", self.cfg.seed, c), 16) % (2**31 - 1) for c in conversations]
        outputs = sampler.generate(conversations, 1, seeds)
        return [Reply(gens[0].text) for gens in outputs]

    def _structured(self, sampler, conversations, json_schema) -> list[Reply]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams
        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed,
                                structured_outputs=StructuredOutputsParams(json=json_schema))
        outputs = sampler.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        return [Reply(o.outputs[0].text) for o in outputs]


class OpenAIJudgeBackend:
    """Judge prompts to an OpenAI-compatible /chat/completions endpoint, through the HTTP client the openai sampler
    uses (samplers/openai_client.py): bounded concurrency, timeouts, retries with backoff, the key from the env.
    cache_dir: keep finished judgements there (a rerun does not pay for them again)."""

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", max_new_tokens: int = 512, temperature: float = 0.0,
                 max_concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, extra_body: dict | None = None, cache_dir: str | None = None):
        from samplers.openai_client import OpenAIClient
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.extra_body = dict(extra_body or {})
        self.client = OpenAIClient(base_url, api_key_env, max_concurrency, timeout_s, max_retries, backoff_s,
                                   max_backoff_s, cache_dir)

    def complete(self, conversations: list[list[dict]], json_schema: dict | None = None) -> list[Reply]:
        from samplers.openai_client import completion_problem
        bodies = [self._body(c, json_schema) for c in conversations]
        return [Reply(None, r.error) if r.error else Reply(r.data["choices"][0]["message"]["content"])
                for r in self.client.post_many("/chat/completions", bodies, validate=completion_problem)]

    def _body(self, conversation: list[dict], json_schema: dict | None) -> dict:
        body = {"model": self.model, "messages": conversation, "max_tokens": self.max_new_tokens,
                "temperature": self.temperature, **self.extra_body}
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "judgement", "schema": json_schema, "strict": True}}
        return body


def make_backend(backend: str, model: str, max_new_tokens: int, params: dict | None = None):
    """The judge backend named in the scorer's params."""
    params = dict(params or {})
    if backend in ("transformers", "vllm"):
        return SamplerJudgeBackend(sampler=backend, model=model, max_new_tokens=max_new_tokens, **params)
    if backend == "openai":
        return OpenAIJudgeBackend(model=model, max_new_tokens=max_new_tokens, **params)
    raise ValueError(f"unknown judge backend {backend!r}; known: transformers, vllm, openai")
