"""The openai sampler against a local fake endpoint (no model): n=k and its fallback, seeds, log-probs, retries
with backoff and Retry-After, garbage replies, hangs, the API key from the environment, the request cache, and
a build_pairs run that accounts for every prompt while the endpoint fails, then resends only what failed.

The fake server (http.server in a thread) answers /v1/models and /v1/chat/completions from a script; its
completions are made from the request (seed, sample index, prompt), so a test can check which request gave what.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.core import schema
from pipelines.core.config import SamplerConfig
from samplers import NoSamples, get_sampler
from samplers.openai_backend import OpenAISampler
from samplers.openai_client import retry_after_seconds

MODEL = "fake-model"


def completion(body: dict, choices: int | None = None, finish: str = "stop") -> dict:
    """A reply to body: `choices` choices (default: body's n), text and log-probs derived from seed and index."""
    user = body["messages"][-1]["content"]
    n = body.get("n", 1) if choices is None else choices
    out = []
    for j in range(n):
        tokens = [{"token": t, "logprob": -0.5 * (k + 1)} for k, t in enumerate(["a", "b", "c"][: 1 + j % 3])]
        out.append({"index": j, "message": {"role": "assistant", "content": f"seed {body['seed'] + j}: {user}"},
                    "finish_reason": finish, "logprobs": {"content": tokens} if body.get("logprobs") else None,
                    "stop_reason": None})
    return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": out,
            "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 11 + 7 * n}}


class FakeEndpoint:
    """script(body, call_number) -> (status, payload: dict | bytes, headers, delay seconds) for chat requests.
    `calls`: (body, Authorization header) of every chat request, in arrival order."""

    def __init__(self, script, models=({"id": MODEL, "max_model_len": 2048},)):
        self.calls, self.script, self.models = [], script, list(models)
        self.release = threading.Event()  # set at close: a hanging handler stops waiting
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": outer.models})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                outer.calls.append((body, self.headers.get("Authorization")))
                status, payload, headers, delay = outer.script(body, len(outer.calls))
                if delay:
                    outer.release.wait(delay)
                self._send(status, payload, headers)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def chat(self, **match) -> list[dict]:
        return [b for b, _ in self.calls if all(b.get(k) == v for k, v in match.items())]


@pytest.fixture
def endpoint():
    made = []

    def make(script, **kwargs):
        made.append(FakeEndpoint(script, **kwargs))
        return made[-1]
    yield make
    for e in made:
        e.close()


def ok(body, n):
    return 200, completion(body), {}, 0


def sampler_for(url: str, k: int = 4, logprobs: bool = True, **openai) -> OpenAISampler:
    cfg = SamplerConfig(name="openai", model=MODEL, k=k, max_new_tokens=16, logprobs=logprobs,
                        openai={"base_url": url, "api_key_env": None, "backoff_s": 0.01, **openai})
    return OpenAISampler(cfg)


Q = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]


def test_one_request_per_prompt_with_n_k_seed_and_logprobs(endpoint):
    e = endpoint(ok)
    sampler = sampler_for(e.url)
    out = sampler.generate(Q, 4, [100, 200, 300])
    assert len(e.calls) == 3 and sorted(b["seed"] for b, _ in e.calls) == [100, 200, 300]
    body = e.calls[0][0]
    assert body["n"] == 4 and body["logprobs"] is True and body["max_tokens"] == 16 and body["model"] == MODEL
    assert body["temperature"] == 0.8 and body["top_p"] == 0.95
    assert [g.text for g in out[1]] == [f"seed {200 + j}: question 1" for j in range(4)]
    g = out[0][1]  # index 1: two log-prob entries, -0.5 and -1.0
    assert g.logprob_sum == pytest.approx(-1.5) and g.completion_tokens == 2 and g.prompt_tokens == 11
    assert g.finish_reason == "stop" and sampler.max_context == 2048  # the server's max_model_len


def test_without_logprobs_token_counts_are_not_guessed(endpoint):
    e = endpoint(ok)
    sampler = sampler_for(e.url, logprobs=False)
    (gens,) = sampler.generate(Q[:1], 4, [1])
    assert "logprobs" not in e.calls[0][0]
    assert all(g.logprob_sum is None and g.completion_tokens is None for g in gens)  # usage has only a total
    (single,) = sampler.generate(Q[:1], 1, [1])
    assert single[0].completion_tokens == 7  # one choice: usage is its own count


def test_a_server_that_ignores_n_gets_k_requests_with_n_1(endpoint):
    e = endpoint(lambda body, n: (200, completion(body, choices=1, finish="length"), {}, 0))
    sampler = sampler_for(e.url)
    (gens,) = sampler.generate(Q[:1], 4, [50])
    # first the n=4 request (one choice back), then the three missing samples with seeds 51, 52, 53
    calls = [(b["n"], b["seed"]) for b, _ in e.calls]
    assert calls[0] == (4, 50) and sorted(calls[1:]) == [(1, 51), (1, 52), (1, 53)]
    assert [g.text for g in gens] == [f"seed {50 + j}: question 0" for j in range(4)]
    assert all(g.finish_reason == "length" for g in gens) and sampler.n_supported is False
    e.calls.clear()
    sampler.generate(Q[1:2], 4, [70])  # detected once: later prompts go one by one from the start
    assert sorted((b["n"], b["seed"]) for b, _ in e.calls) == [(1, 70), (1, 71), (1, 72), (1, 73)]


def test_a_server_that_refuses_n_falls_back_and_a_trusted_n_does_not(endpoint):
    e = endpoint(lambda body, n: (400, {"error": "n must be 1"}, {}, 0) if body["n"] > 1 else ok(body, n))
    sampler = sampler_for(e.url)
    (gens,) = sampler.generate(Q[:1], 3, [10])
    assert [g.text for g in gens] == [f"seed {10 + j}: question 0" for j in range(3)]
    assert sampler.n_supported is False
    trusting = sampler_for(e.url, supports_n=True)
    (failed,) = trusting.generate(Q[:1], 3, [10])
    assert isinstance(failed, NoSamples) and failed == [] and "HTTP 400" in failed.error
    short = endpoint(lambda body, n: (200, completion(body, choices=1), {}, 0))
    (few,) = sampler_for(short.url, supports_n=True).generate(Q[:1], 3, [10])
    assert few == [] and "returned 1 of 3 choices" in few.error and len(short.calls) == 1
    split = endpoint(ok)
    sampler_for(split.url, supports_n=False).generate(Q[:1], 3, [10])
    assert sorted((b["n"], b["seed"]) for b, _ in split.calls) == [(1, 10), (1, 11), (1, 12)]


def test_429_with_retry_after_and_500_are_retried(endpoint):
    tries = {}

    def script(body, n):
        user = body["messages"][-1]["content"]
        tries[user] = tries.get(user, 0) + 1
        if user == "question 0" and tries[user] == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "1"}, 0
        if user == "question 0" and tries[user] == 2:
            return 502, {"error": "bad gateway"}, {}, 0
        return ok(body, n)
    e = endpoint(script)
    t0 = time.perf_counter()
    out = sampler_for(e.url).generate(Q, 4, [1, 2, 3])
    elapsed = time.perf_counter() - t0
    assert tries == {"question 0": 3, "question 1": 1, "question 2": 1}
    assert all(len(g) == 4 for g in out) and out[0][0].text == "seed 1: question 0"
    assert elapsed >= 1.0  # the Retry-After of 1 s, not the 0.01 s backoff


def test_retry_after_as_seconds_or_http_date():
    import email.utils
    assert retry_after_seconds("2.5") == 2.5 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 31


def test_exhausted_retries_garbage_and_a_bad_request_are_errors_never_answers(endpoint):
    def script(body, n):
        user = body["messages"][-1]["content"]
        if user == "question 0":
            return 503, {"error": "overloaded"}, {}, 0
        if user == "question 1":
            return 200, b"<html>not json", {}, 0
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}, {}, 0
    e = endpoint(script)
    down, garbage, empty = sampler_for(e.url, max_retries=2).generate(Q, 4, [1, 2, 3])
    assert down == [] and "gave up after 3 attempts" in down.error and "HTTP 503" in down.error
    assert garbage == [] and "not JSON" in garbage.error
    assert empty == [] and "without text content" in empty.error
    counts = pd.Series([b["messages"][-1]["content"] for b, _ in e.calls]).value_counts().to_dict()
    assert counts == {"question 0": 3, "question 1": 1, "question 2": 1}  # garbage is not retried


def test_a_hanging_server_hits_the_timeout(endpoint):
    e = endpoint(lambda body, n: (200, completion(body), {}, 30) if body["seed"] == 1 else ok(body, n))
    t0 = time.perf_counter()
    hung, fine = sampler_for(e.url, timeout_s=0.3, max_retries=1).generate(Q[:2], 4, [1, 2])
    assert time.perf_counter() - t0 < 5
    assert hung == [] and "Timeout" in hung.error and "gave up after 2 attempts" in hung.error
    assert len(fine) == 4


def test_api_key_comes_from_the_named_environment_variable(endpoint, monkeypatch):
    e = endpoint(ok)
    monkeypatch.setenv("PAIRSMITH_TEST_KEY", "sk-secret")
    cfg = SamplerConfig(name="openai", model=MODEL, openai={"base_url": e.url, "api_key_env": "PAIRSMITH_TEST_KEY"})
    OpenAISampler(cfg).generate(Q[:1], 2, [1])
    assert e.calls[0][1] == "Bearer sk-secret"
    with pytest.raises(ValidationError, match="api_key"):  # a key in a config is refused
        SamplerConfig(name="openai", openai={"api_key": "sk-secret"})
    with pytest.raises(ValidationError, match="the NAME of an environment variable"):  # so is a key as the name
        SamplerConfig(name="openai", openai={"api_key_env": "sk-secret"})
    monkeypatch.delenv("PAIRSMITH_TEST_KEY")
    e.calls.clear()
    OpenAISampler(cfg).generate(Q[:1], 2, [1])
    assert e.calls[0][1] is None  # unset: no header (a local vllm serve needs none)


def test_start_up_check_names_the_served_models_and_an_unreachable_server(endpoint):
    e = endpoint(ok)
    with pytest.raises(ValueError, match=r"'other' is not served .* it serves \['fake-model'\]"):
        OpenAISampler(SamplerConfig(name="openai", model="other", openai={"base_url": e.url, "api_key_env": None}))
    e.close()
    with pytest.raises(RuntimeError, match="did not answer: ConnectError"):
        sampler_for(e.url)


def test_request_cache_answers_a_repeated_request_without_the_server(endpoint, tmp_path):
    e = endpoint(lambda body, n: (500, {}, {}, 0) if body["seed"] == 3 else ok(body, n))
    sampler = sampler_for(e.url, max_retries=0)
    sampler.cache_requests_in(tmp_path / "requests")
    first = sampler.generate(Q, 4, [1, 2, 3])
    assert [len(g) for g in first] == [4, 4, 0] and len(e.calls) == 3
    e.calls.clear()
    again = sampler.generate(Q, 4, [1, 2, 3])
    assert [b["seed"] for b, _ in e.calls] == [3]  # only the failed request goes out again
    assert [[g.text for g in gens] for gens in again[:2]] == [[g.text for g in gens] for gens in first[:2]]
    assert len(list((tmp_path / "requests").rglob("*.json"))) == 2
    uncached = sampler_for(e.url, max_retries=0, cache=False)
    uncached.cache_requests_in(tmp_path / "other")
    uncached.generate(Q[:1], 4, [1])
    assert not (tmp_path / "other").exists()


# --- a build_pairs run over the failing endpoint: every prompt accounted, a rerun resends only failures -------

def build_config(url: str, output_dir, **openai) -> dict:
    return {"output_dir": str(output_dir), "run_id": None, "prompts": {"limit": 6}, "batch_size": 3,
            "sampler": {"name": "openai", "model": MODEL, "k": 3, "max_new_tokens": 16,
                        "openai": {"base_url": url, "api_key_env": None, "backoff_s": 0.01, "max_retries": 1,
                                   "timeout_s": 0.5, **openai}},
            "scorers": [{"name": "confidence"}], "selection": {"rule": "max_min"}}


def test_a_failing_endpoint_ends_in_sample_error_drops_and_a_rerun_resends_only_those(endpoint, tmp_path):
    from pipelines.loaders import load_prompts
    from pipelines.pairs import build
    from pipelines.pairs.config import BuildConfig

    config = BuildConfig.model_validate(build_config("http://unused", tmp_path))
    prompts = load_prompts(config.prompts)[0]
    text = dict(zip(prompts["prompt_id"], [m[-1]["content"] for m in prompts["messages"]]))
    bad = {text[p]: kind for p, kind in zip(prompts["prompt_id"][[0, 2, 4]], ("500", "garbage", "hang"))}
    healthy = threading.Event()

    def script(body, n):
        kind = None if healthy.is_set() else bad.get(body["messages"][-1]["content"])
        if kind == "500":
            return 500, {"error": "boom"}, {}, 0
        if kind == "garbage":
            return 200, b"{\"choices\": [", {}, 0
        if kind == "hang":
            return 200, completion(body), {}, 30
        return ok(body, n)
    e = endpoint(script)
    config = BuildConfig.model_validate(build_config(e.url, tmp_path))
    manifest = build.run_local(config, log=lambda m: None)
    drops = pd.read_parquet(f"{manifest['run_dir']}/drops.parquet")
    failed = drops[drops["reason"] == "sample_error"]
    assert sorted(failed["prompt_id"].map(text)) == sorted(bad)
    assert failed["detail"].str.contains("HTTP 500").sum() == 1 and failed["detail"].str.contains("not JSON").sum() == 1
    assert failed["detail"].str.contains("Timeout").sum() == 1 and failed["detail"].str.contains(":[0-9]+: ").all()
    pairs = pd.read_parquet(f"{manifest['run_dir']}/pairs.parquet")
    assert set(pairs["prompt_id"]) | set(drops["prompt_id"]) == set(prompts["prompt_id"])  # nothing lost
    assert set(pairs["prompt_id"]) == set(prompts["prompt_id"]) - set(failed["prompt_id"])
    assert manifest["counts"]["candidates"] == 3 * 3

    healthy.set()
    e.calls.clear()
    manifest = build.run_local(config.model_copy(update={"run_id": None}), log=lambda m: None)
    assert sorted(b["messages"][-1]["content"] for b, _ in e.calls) == sorted(bad)  # the rest came from the cache
    drops = pd.read_parquet(f"{manifest['run_dir']}/drops.parquet")
    assert not (drops["reason"] == "sample_error").any() and manifest["counts"]["prompts_paired"] == 6
    assert manifest["batches"] == {"total": 2, "computed": 2, "resumed": 0}
    e.calls.clear()
    manifest = build.run_local(config.model_copy(update={"run_id": None}), log=lambda m: None)
    assert e.calls == [] and manifest["batches"]["resumed"] == 2  # nothing failed: the shards are reused


def test_the_registry_builds_it_by_name(endpoint):
    e = endpoint(ok)
    sampler = get_sampler(SamplerConfig(name="openai", model=MODEL, openai={"base_url": e.url, "api_key_env": None}))
    assert isinstance(sampler, OpenAISampler) and sampler.name == "openai" and "sample_error" in schema.REASONS


@pytest.mark.slow
def test_a_killed_run_resumes_without_resending_finished_requests(endpoint, tmp_path):
    """kill -9 of `python -m flows.build_pairs --no-prefect` while its third request is in flight; the rerun
    sends the third and fourth prompts' requests only. (A subprocess: a real kill, not a simulated one.)"""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    root = Path(__file__).resolve().parents[2]
    in_flight, healthy = threading.Event(), threading.Event()

    def script(body, n):
        if not healthy.is_set() and n == 3:
            in_flight.set()
            return 200, completion(body), {}, 120
        return ok(body, n)
    e = endpoint(script)
    cfg = build_config(e.url, tmp_path / "runs", max_concurrency=1, timeout_s=60)
    cfg["prompts"]["limit"], cfg["batch_size"] = 4, 4  # one batch: without the request cache all 4 go again
    path = tmp_path / "openai.yaml"
    path.write_text(yaml.safe_dump(cfg))
    command = [sys.executable, "-m", "flows.build_pairs", "--no-prefect", "--config", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert in_flight.wait(120), proc.communicate(timeout=5)[0].decode()[-2000:] if proc.poll() is not None else ""
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    answered = [b["messages"][-1]["content"] for b, _ in e.calls[:2]]
    healthy.set()
    e.calls.clear()
    out = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resent = [b["messages"][-1]["content"] for b, _ in e.calls]
    assert len(resent) == 2 and not set(resent) & set(answered)
    assert "4 prompts -> 12 candidates" in out.stdout


def test_the_judge_backend_shares_the_client_and_its_cache(endpoint, tmp_path):
    from scorers.judge_backends import OpenAIJudgeBackend
    e = endpoint(lambda body, n: (200, completion({**body, "seed": 0}), {}, 0) if "bad" not in
                 body["messages"][-1]["content"] else (200, b"garbage", {}, 0))
    judge = OpenAIJudgeBackend(model=MODEL, base_url=e.url, api_key_env=None, backoff_s=0.01, cache_dir=tmp_path)
    asked = [[{"role": "user", "content": "rate this"}], [{"role": "user", "content": "bad one"}]]
    good, bad = judge.complete(asked)
    assert good.text == "seed 0: rate this" and bad.text is None and "not JSON" in bad.error
    e.calls.clear()
    good_again, _ = judge.complete(asked)
    assert good_again == good and [b["messages"][-1]["content"] for b, _ in e.calls] == ["bad one"]
