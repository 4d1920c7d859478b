"""Where an LLM judge's prompts go: the project's samplers (transformers, vllm) or an OpenAI-compatible endpoint.

A backend answers `complete(conversations, json_schema=None) -> list[Reply]`, one reply per conversation, in
order. A reply is text or an error; it is never a made-up verdict (the judge scorers turn errors into error
rows).

- `transformers` / `vllm`: the sampler of `samplers/` for the judge model, via `get_sampler` (loaded once per
  process; the embedded SmolLM2 by default). Judging is greedy in effect: the samplers require T > 0, and at
  T = 1e-5 the top token wins. With `vllm`, `json_schema` constrains decoding (vLLM structured outputs).
- `openai`: any OpenAI-compatible /chat/completions server (`vllm serve`, hosted APIs), through httpx, with
  bounded concurrency, a per-request timeout, and retries with exponential backoff on 429, 5xx, timeouts and
  connection errors (a numeric Retry-After header is honoured, capped). The API key is read from the
  environment variable named by `api_key_env`, never from the config file.
"""

from __future__ import annotations

import os
import time
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
    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", api_key_env: str | None = "OPENAI_API_KEY",
                 max_new_tokens: int = 512, temperature: float = 0.0, max_concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 extra_body: dict | None = None):
        self.model, self.url = model, base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.backoff_s, self.max_backoff_s, self.extra_body = backoff_s, max_backoff_s, dict(extra_body or {})

    def complete(self, conversations: list[list[dict]], json_schema: dict | None = None) -> list[Reply]:
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.max_concurrency)
        with httpx.Client(headers=headers, timeout=self.timeout_s, limits=limits) as client, \
                ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(lambda c: self._request(client, c, json_schema), conversations))

    def _body(self, conversation: list[dict], json_schema: dict | None) -> dict:
        body = {"model": self.model, "messages": conversation, "max_tokens": self.max_new_tokens,
                "temperature": self.temperature, **self.extra_body}
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "judgement", "schema": json_schema, "strict": True}}
        return body

    def _request(self, client, conversation: list[dict], json_schema: dict | None) -> Reply:
        import httpx
        body, last = self._body(conversation, json_schema), ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
            try:
                response = client.post(self.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    return self._reply(response)
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in self.RETRY_STATUS:
                    return Reply(None, last)  # a bad request or a bad key does not get better by retrying
                retry_after = response.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), self.max_backoff_s)
            if attempt < self.max_retries:
                time.sleep(wait)
        return Reply(None, f"gave up after {self.max_retries + 1} attempts; last: {last}")

    @staticmethod
    def _reply(response) -> Reply:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return Reply(None, f"malformed completion response ({type(e).__name__}): {response.text[:300]}")
        if not isinstance(content, str):
            return Reply(None, f"completion has no text content: {response.text[:300]}")
        return Reply(content)


def make_backend(backend: str, model: str, max_new_tokens: int, params: dict | None = None):
    """The judge backend named in the scorer's params."""
    params = dict(params or {})
    if backend in ("transformers", "vllm"):
        return SamplerJudgeBackend(sampler=backend, model=model, max_new_tokens=max_new_tokens, **params)
    if backend == "openai":
        return OpenAIJudgeBackend(model=model, max_new_tokens=max_new_tokens, **params)
    raise ValueError(f"unknown judge backend {backend!r}; known: transformers, vllm, openai")
