"""The openai sampler against a REAL vLLM OpenAI server on the embedded SmolLM2 (the session fixture
`vllm_openai_server` in tests/conftest.py starts one for all such tests): n=k samples with seeds, log-probs and
token counts as the server reports them, the n=1 fallback giving the same samples, and a whole build_pairs run."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import SamplerConfig
from samplers.openai_backend import OpenAISampler

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

Q1 = schema.user_messages("What is 3 + 4?")
Q2 = schema.user_messages("Name a colour of the sky on a clear day, in one word.")
MAX_NEW = 24


def sampler(server, **openai) -> OpenAISampler:
    base, name = server
    return OpenAISampler(SamplerConfig(name="openai", model=name, k=3, max_new_tokens=MAX_NEW, temperature=0.9,
                                       openai={"base_url": base, "api_key_env": None, **openai}))


def test_k_samples_per_prompt_with_seeds_logprobs_and_token_counts(vllm_openai_server):
    s = sampler(vllm_openai_server)
    assert s.max_context == 2048  # the server's max_model_len, from /v1/models
    out = s.generate([Q1, Q2], 3, [11, 12])
    assert [len(g) for g in out] == [3, 3] and s.n_supported is None  # vLLM honours n: no fallback
    n_prompt = s.prompt_tokens(Q1)  # vLLM's /tokenize with the chat template
    assert n_prompt > 10
    for g in out[0]:
        assert g.prompt_tokens == n_prompt
        assert isinstance(g.text, str) and g.finish_reason in ("stop", "length")
        assert 1 <= g.completion_tokens <= MAX_NEW and (g.finish_reason == "stop") == (g.completion_tokens < MAX_NEW)
        assert g.logprob_sum is not None and math.isfinite(g.logprob_sum) and g.logprob_sum < 0
    again = s.generate([Q1], 3, [11])[0]  # no cache bound: a real second request
    assert [g.text for g in again] == [g.text for g in out[0]]
    assert [g.logprob_sum for g in again] == pytest.approx([g.logprob_sum for g in out[0]], abs=1e-3)
    other = s.generate([Q1], 3, [99])[0]
    assert [g.text for g in other] != [g.text for g in out[0]]
    assert len({g.text for g in out[0] + other}) > 1


def test_one_by_one_requests_give_the_samples_of_one_n_k_request(vllm_openai_server):
    """vLLM seeds the children of an n=k request seed + j, as the fallback does: the same samples either way."""
    together = sampler(vllm_openai_server).generate([Q2], 3, [5])[0]
    split = sampler(vllm_openai_server, supports_n=False).generate([Q2], 3, [5])[0]
    assert [g.text for g in split] == [g.text for g in together]


def test_build_pairs_over_the_server(vllm_openai_server, tmp_path):
    from pipelines.pairs import build
    from pipelines.pairs.config import BuildConfig
    base, name = vllm_openai_server
    config = BuildConfig.model_validate({
        "output_dir": str(tmp_path), "prompts": {"limit": 3}, "batch_size": 3,
        "sampler": {"name": "openai", "model": name, "k": 3, "max_new_tokens": 48,
                    "openai": {"base_url": base, "api_key_env": None}}})
    manifest = build.run_local(config, log=lambda m: None)
    run = manifest["run_dir"]
    candidates = pd.read_parquet(f"{run}/candidates.parquet")
    assert len(candidates) == 9 and set(candidates["sampler"]) == {"openai"} and set(candidates["model"]) == {name}
    assert candidates["logprob_sum"].notna().all() and (candidates["completion_tokens"] > 0).all()
    scores = pd.read_parquet(f"{run}/scores.parquet")
    assert scores.loc[scores["scorer"] == "confidence", "error"].isna().all()  # the server's log-probs feed it
    pairs, drops = pd.read_parquet(f"{run}/pairs.parquet"), pd.read_parquet(f"{run}/drops.parquet")
    assert set(pairs["prompt_id"]) | set(drops["prompt_id"]) == set(pd.read_parquet(f"{run}/prompts.parquet")
                                                                      ["prompt_id"])
    import json
    cached = [json.loads(f.read_text()) for f in (tmp_path / ".cache" / "requests").rglob("*.json")]
    completions = [c for c in cached if "choices" in c]  # the rest: /tokenize counts, cached as well
    assert sorted(len(c["choices"]) for c in completions) == [3, 3, 3]  # one n=3 request per prompt
    assert len(cached) == 6 and all("count" in c for c in cached if "choices" not in c)
    again = build.run_local(config, log=lambda m: None)
    assert again["batches"] == {"total": 1, "computed": 0, "resumed": 1}
