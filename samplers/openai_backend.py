"""openai backend: k responses per prompt from any OpenAI-compatible /chat/completions endpoint (vLLM's server,
hosted APIs), through the shared HTTP client of samplers/openai_client.py (bounded concurrency, retries with
backoff on 429/5xx/timeouts honouring Retry-After, the API key from an environment variable).

Requests. One request per prompt with `n = k` and the prompt's `seed`. A server that ignores n (fewer choices
than asked) or refuses it (HTTP 400 to n > 1) is detected on the first such reply, unless `supports_n` says so in
the config: the prompt's missing samples are then asked for one at a time (n = 1, seeds seed + j, the seeds
vLLM itself gives the children of an n = k request), and so is every later prompt. With `logprobs: true` the
sampled tokens' log-probs come back; their sum fills `logprob_sum` (vLLM's server returns raw, untempered
log-probs by default, like the offline engine) and their count `completion_tokens`. Without them a request of
one choice takes `completion_tokens` from `usage`; a reply of several choices has only a total there, so the
per-response count is left null rather than guessed.

Failures. A prompt whose requests still fail after the retries (or whose reply is malformed) gets no responses:
`NoSamples(error)`, which the sample stage turns into a `sample_error` drop row, so the run accounts for it. The
cache keeps every finished request (under the run's <output_dir>/.cache/requests, set by the build through
`cache_requests_in`; /tokenize counts too): a rerun resends only what failed or never finished.

Context. `max_context` is the config's, else the server's max_model_len (vLLM's /v1/models reports it). Prompt
lengths are counted by vLLM's /tokenize when the server has it; elsewhere they count as 0 and the server itself
rejects a prompt that is too long (a 400: a sample_error row naming it).

Not supported: `continue_final` (step-level search continues partial answers; use the vllm backend there) and
`render` (the chat template is applied on the server).
"""

from __future__ import annotations

from pathlib import Path

from samplers import Generation, NoSamples
from samplers.openai_client import OpenAIClient, RequestCache, Response, completion_problem

UNKNOWN_CONTEXT = 2**31 - 1  # no limit known here: the server checks


def generation(choice: dict, usage: dict, n_choices: int) -> Generation:
    """One choice of a reply as a Generation."""
    tokens = ((choice.get("logprobs") or {}).get("content")) or None
    logprobs = [t.get("logprob") for t in tokens] if tokens else None
    if logprobs is not None and not all(isinstance(v, (int, float)) for v in logprobs):
        logprobs = None
    if tokens:
        completion_tokens = len(tokens)
    elif n_choices == 1 and isinstance(usage.get("completion_tokens"), int):
        completion_tokens = usage["completion_tokens"]
    else:
        completion_tokens = None  # usage has only the total of all choices
    stop_reason = choice.get("stop_reason")  # vLLM: the stop string that ended the text
    return Generation(
        text=choice["message"]["content"],
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=completion_tokens,
        logprob_sum=None if logprobs is None else float(sum(logprobs)),
        stop_reason=stop_reason if isinstance(stop_reason, str) else None)


class OpenAISampler:
    name = "openai"

    def __init__(self, cfg):
        self.cfg, self.api = cfg, cfg.openai
        self.model_name = cfg.model
        self.client = OpenAIClient(self.api.base_url, self.api.api_key_env, self.api.max_concurrency,
                                   self.api.timeout_s, self.api.max_retries, self.api.backoff_s,
                                   self.api.max_backoff_s)
        self.n_supported = self.api.supports_n
        self.tokenize_url: str | None = self.api.base_url.rstrip("/").removesuffix("/v1") + "/tokenize"
        self.server_context = self._check_server()

    def cache_requests_in(self, directory: str | Path) -> None:
        """Keep finished requests under directory (the build points it at the run's output_dir/.cache)."""
        if self.api.cache:
            self.client.cache = RequestCache(directory)

    def _check_server(self) -> int | None:
        """The served models (is ours one of them?) and their max_model_len; a clear error if the server is not
        there or refuses the key. A server without /models is taken on trust."""
        reply = self.client.get("/models")
        if reply.error:
            if reply.status == 404:
                return None
            raise RuntimeError(f"openai sampler: {self.client.url('/models')} did not answer: {reply.error}")
        served = {m.get("id"): m for m in reply.data.get("data") or [] if isinstance(m, dict)}
        if served and self.model_name not in served:
            raise ValueError(f"openai sampler: model {self.model_name!r} is not served at {self.api.base_url}; "
                             f"it serves {sorted(map(str, served))} (set sampler.model)")
        length = served.get(self.model_name, {}).get("max_model_len")
        return int(length) if isinstance(length, int) else None

    @property
    def max_context(self) -> int:
        return self.api.max_context or self.server_context or UNKNOWN_CONTEXT

    def prompt_tokens(self, messages: list[dict]) -> int:
        if self.tokenize_url is None:
            return 0
        (reply,) = self.client.post_many(self.tokenize_url, [{"model": self.model_name, "messages": _plain(messages),
                                                                "add_generation_prompt": True}], retry=False)
        if reply.error is None and isinstance(reply.data.get("count"), int):
            return reply.data["count"]
        if reply.status in (404, 405, 501) or reply.error is None:
            self.tokenize_url = None  # not vLLM's /tokenize: no token counts from this server
        return 0  # uncounted: the server rejects a prompt that is too long itself

    def render(self, messages: list[dict], continue_final: bool = False) -> str:
        raise NotImplementedError("the openai sampler cannot render prompts: the chat template is applied on the "
                                  "server (use the transformers or vllm sampler for step-level pairs)")

    def body(self, messages: list[dict], n: int, seed: int, stop: list[str] | None,
             max_new_tokens: int | None) -> dict:
        body = {"model": self.model_name, "messages": _plain(messages), "n": n, "seed": int(seed),
                "temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                "max_tokens": max_new_tokens or self.cfg.max_new_tokens, **self.api.extra_body}
        if self.cfg.logprobs:
            body["logprobs"] = True
        if stop:
            body["stop"] = list(stop)
        return body

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int], *, continue_final: bool = False,
                 stop: list[str] | None = None, max_new_tokens: int | None = None) -> list[list[Generation]]:
        if continue_final:
            raise NotImplementedError("the openai sampler cannot continue a partial answer (continue_final); use "
                                      "the transformers or vllm sampler for step-level search")
        got: list[list[Generation]] = [[] for _ in conversations]  # each conversation's samples so far
        errors: dict[int, str] = {}                                  # why a conversation has none
        refused: dict[int, str] = {}                                 # a 400 to n > 1: maybe n is the problem
        asked_n = self.n_supported is not False and n > 1
        if asked_n:
            replies = self._post([self.body(m, n, s, stop, max_new_tokens) for m, s in zip(conversations, seeds)])
            for i, reply in enumerate(replies):
                if reply.error is None:
                    got[i] = _generations(reply)[:n]
                elif reply.status == 400 and self.n_supported is None:
                    refused[i] = reply.error
                else:
                    errors[i] = reply.error
        missing = [i for i in range(len(conversations)) if i not in errors and len(got[i]) < n]
        if asked_n and self.n_supported:  # configured to trust n: a short reply is the server's error
            for i in missing:
                errors[i] = (f"the server returned {len(got[i])} of {n} choices (sampler.openai.supports_n is "
                             f"true; set it to false or null)")
            missing = []
        # the missing samples one at a time, with the seeds vLLM gives the children of an n=k request
        singles = [[self.body(conversations[i], 1, seeds[i] + j, stop, max_new_tokens)
                    for j in range(len(got[i]), n)] for i in missing]
        flat = self._post([b for group in singles for b in group])
        for i, more in zip(missing, _regroup(flat, [len(g) for g in singles])):
            failed = next((r.error for r in more if r.error), None)
            if failed:
                errors[i] = f"{refused[i]}; then with n=1: {failed}" if i in refused else failed
            else:
                got[i] += [g for r in more for g in _generations(r)[:1]]
                if asked_n:
                    self.n_supported = False  # n=1 gave what n=k did not: every later prompt goes one by one
        return [NoSamples(errors[i]) if i in errors else got[i] for i in range(len(conversations))]

    def _post(self, bodies: list[dict]) -> list[Response]:
        return self.client.post_many("/chat/completions", bodies, validate=completion_problem)


def _generations(reply: Response) -> list[Generation]:
    choices = sorted(reply.data["choices"], key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    return [generation(c, reply.data.get("usage") or {}, len(choices)) for c in choices]


def _plain(messages) -> list[dict]:
    """Plain {role, content} dicts (rows read back from Parquet may carry other mapping types)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _regroup(items: list, sizes: list[int]) -> list[list]:
    """items cut into consecutive groups of the given lengths."""
    out, start = [], 0
    for size in sizes:
        out.append(items[start:start + size])
        start += size
    return out
