"""HTTP to an OpenAI-compatible endpoint (vLLM's server, hosted APIs), shared by the openai sampler
(samplers/openai_backend.py) and the openai judge backend (scorers/judge_backends.py).

- Bounded concurrency: one httpx connection pool and a thread pool of `max_concurrency`.
- Retries with exponential backoff (backoff_s * 2^attempt, capped at max_backoff_s) on 408, 409, 429 and 5xx
  replies, timeouts and dropped connections; a Retry-After header (seconds or an HTTP date) replaces the backoff,
  capped the same way. Other statuses (400 bad request, 401 bad key, 404) are not retried: they do not get better.
- A 200 whose body is not JSON, or not what the caller's `validate` accepts, is an error, never an answer made up
  from it; it is not retried (a proxy or a wrong URL answers the same again).
- The API key comes from the environment variable named by `api_key_env` (a config never holds a key); an unset
  variable sends no Authorization header (a local `vllm serve` needs none).
- An optional on-disk cache of finished requests (`RequestCache`), keyed by URL and body: a killed run resumes
  without resending them. Only replies `validate` accepts are kept, so errors are retried on the next run.

httpx rather than the `openai` package: it is already installed with Prefect, and a request here is a plain JSON
body, so the retry policy, the cache and the extra fields of vLLM's server (seed, stop_reason) stay in view.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.core import io
from pipelines.core.ids import stable_hash

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Response:
    data: dict | None           # the parsed JSON reply; None exactly when error is set
    error: str | None = None
    status: int | None = None   # HTTP status of the last attempt (None: no reply at all)
    cached: bool = False


class RequestCache:
    """One JSON file per finished request: <directory>/<key[:2]>/<key>.json, written atomically."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(url: str, body: dict) -> str:
        return stable_hash("openai-request", url, body, length=32)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        import json
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, ValueError):  # absent, or unreadable: ask the server again
            return None

    def put(self, key: str, data: dict) -> None:
        io.write_json(data, self.path(key))


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header as seconds from now: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def completion_problem(data: dict) -> str | None:
    """Why a /chat/completions reply cannot be used, or None."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for c in choices:
        message = c.get("message") if isinstance(c, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return "a choice without text content"
    return None


class OpenAIClient:
    def __init__(self, base_url: str, api_key_env: str | None = "OPENAI_API_KEY", max_concurrency: int = 8,
                 timeout_s: float = 300.0, max_retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 cache_dir: str | Path | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout_s, self.max_retries = max_concurrency, timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.cache = RequestCache(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "attempts": 0, "cached": 0}  # for logs and tests

    def headers(self) -> dict:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def url(self, path: str) -> str:
        """path under base_url ("/chat/completions"), or an absolute URL (vLLM's /tokenize lives at the root)."""
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _client(self):
        import httpx
        return httpx.Client(headers=self.headers(), timeout=self.timeout_s,
                            limits=httpx.Limits(max_connections=self.max_concurrency))

    def get(self, path: str) -> Response:
        """One GET, no retries (the sampler's start-up check: is the server there, what does it serve)."""
        import httpx
        try:
            with self._client() as client:
                r = client.get(self.url(path))
        except httpx.HTTPError as e:
            return Response(None, f"{type(e).__name__}: {e}")
        return self._parsed(r, None) if r.status_code == 200 else Response(None, self._status_error(r), r.status_code)

    def post_many(self, path: str, bodies: list[dict], validate: Callable[[dict], str | None] | None = None,
                  retry: bool = True) -> list[Response]:
        """POST every body to path (at most max_concurrency at once); one Response per body, in order.
        validate(data) -> None, or why the reply is unusable (then it is an error, and not cached)."""
        from concurrent.futures import ThreadPoolExecutor
        if not bodies:
            return []
        url = self.url(path)
        with self._client() as client, ThreadPoolExecutor(min(self.max_concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._post(client, url, b, validate, retry), bodies))

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _post(self, client, url: str, body: dict, validate, retry: bool) -> Response:
        import httpx
        key = self.cache.key(url, body) if self.cache else None
        if key is not None and (data := self.cache.get(key)) is not None and not (validate and validate(data)):
            self._count("cached")
            return Response(data, status=200, cached=True)
        self._count("requests")
        last, status = "", None
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            wait = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
            self._count("attempts")
            try:
                r = client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last, status = f"{type(e).__name__}: {e}", None
            else:
                status = r.status_code
                if status == 200:
                    response = self._parsed(r, validate)
                    if key is not None and response.error is None:
                        self.cache.put(key, response.data)
                    return response
                last = self._status_error(r)
                if status not in RETRY_STATUS:
                    return Response(None, last, status)
                after = retry_after_seconds(r.headers.get("retry-after"))
                if after is not None:
                    wait = min(after, self.max_backoff_s)
            if attempt < attempts - 1:
                time.sleep(wait)
        return Response(None, f"gave up after {attempts} attempts; last: {last}", status)

    def _status_error(self, r) -> str:
        error = f"HTTP {r.status_code}: {r.text[:300]}"
        if r.status_code in (401, 403) and self.api_key_env and not os.environ.get(self.api_key_env):
            error += f" (the API key is read from ${self.api_key_env}, which is not set)"
        return error

    @staticmethod
    def _parsed(r, validate) -> Response:
        try:
            data = r.json()
        except ValueError:
            return Response(None, f"malformed reply (not JSON): {r.text[:300]!r}", r.status_code)
        if not isinstance(data, dict):
            return Response(None, f"malformed reply (not a JSON object): {r.text[:300]!r}", r.status_code)
        why = validate(data) if validate else None
        if why:
            return Response(None, f"malformed reply ({why}): {r.text[:300]!r}", r.status_code)
        return Response(data, status=r.status_code)
