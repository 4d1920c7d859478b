"""The ray_data sampler (Ray Data's LLM processor): its request/reply plumbing through a real Ray Data pipeline
with a fake engine stage, and the `vllm`-marked run of Ray Data's real vLLM engine stage (vllm-cpu here), which
must sample what the vllm sampler samples.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import local_ray, vllm_cpu_engine

pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a local Ray cluster, the real tokenizer (and vLLM)


@pytest.fixture
def ray_cluster():
    with local_ray() as ray:
        yield ray


def test_ray_data_sampler_requests_and_replies(monkeypatch, smollm_dir, ray_cluster):
    """The ray_data sampler through a real Ray Data pipeline (Processor: rows -> engine stage -> postprocess) with
    a fake engine stage that answers like Ray's vLLM stage: its text names the request's seed and sampling params."""
    pytest.importorskip("ray.data.llm")
    from ray.llm._internal.batch.processor.base import Processor

    from pipelines.core import ids
    from pipelines.core.config import SamplerConfig
    from pipelines.pairs import stages
    from samplers import ray_data_backend

    eos = None

    def fake_build(config, postprocess):
        eos_id = eos

        def fake_vllm_stage(row):  # what vLLMEngineStage adds to a row (vLLMOutputData fields)
            p = row.pop("sampling_params")
            user = row["messages"][-1]["content"]
            n_tokens = p["max_tokens"] if p["seed"] % 2 == 0 else 3  # even seeds run to the limit
            tokens = [100 + t for t in range(n_tokens)]
            if p["seed"] % 2:
                tokens[-1] = eos_id
            params = f"n={p['n']} T={p['temperature']} top_p={p['top_p']} max={p['max_tokens']} lp={p['logprobs']}"
            return {**row, "generated_text": f"{user}|seed={p['seed']}|{params}", "generated_tokens": tokens,
                    "num_input_tokens": 7, "num_generated_tokens": len(tokens),
                    "logprobs": [{t: {"logprob": -0.25, "rank": 1, "decoded_token": "x"}} for t in tokens]}

        return Processor(config, [], preprocess=fake_vllm_stage, postprocess=postprocess)

    monkeypatch.setattr(ray_data_backend, "build_ray_processor", fake_build)
    cfg = SamplerConfig(name="ray_data", k=3, max_new_tokens=5, temperature=0.7, top_p=0.9,
                        ray_data={"batch_size": 4, "placement_group_config": {"bundles": [{"CPU": 1}]}})
    sampler = ray_data_backend.RayDataSampler(cfg)
    eos = sampler.tokenizer.eos_token_id
    sampler.processor = fake_build(sampler.processor_config, ray_data_backend.reply)  # now with the real eos id
    assert sampler.processor_config.batch_size == 4 and sampler.max_context >= 2048

    convs = [[{"role": "user", "content": "first"}], [{"role": "user", "content": "second"}]]
    out = sampler.generate(convs, 3, [10, 21])
    assert [len(g) for g in out] == [3, 3]
    for conv, seed, gens in zip(convs, [10, 21], out):
        for j, g in enumerate(gens):  # each reply went back to its own request and sample index
            s = seed + j  # vLLM's seeds for the children of an n=k request
            assert g.text == f"{conv[0]['content']}|seed={s}|n=1 T=0.7 top_p=0.9 max=5 lp=0"
            assert g.finish_reason == ("length" if s % 2 == 0 else "stop")
            assert g.completion_tokens == (5 if s % 2 == 0 else 3) and g.prompt_tokens == 7
            assert g.logprob_sum == pytest.approx(-0.25 * g.completion_tokens)

    # the sampling stage, unchanged, over this sampler: k candidates per prompt with the per-prompt seeds
    prompts = pd.DataFrame({"prompt_id": ["p1", "p2"], "source": "t", "row": [1, 2],
                            "messages": [convs[0], convs[1]]})
    candidates, drops = stages.sample_stage(prompts, sampler, cfg)
    assert drops.empty and len(candidates) == 6 and set(candidates["sampler"]) == {"ray_data"}
    for row in candidates.itertuples():
        assert row.text.split("|")[1] == f"seed={ids.prompt_seed(0, row.prompt_id) + row.sample_index}"


@pytest.mark.vllm
def test_ray_data_sampler_on_vllm_cpu(smollm_dir, ray_cluster):
    """The real path: Ray Data's vLLM engine stage (vllm-cpu here) answers 2 prompts x k=2 like the vllm sampler
    (~2.5 min here: two engine start-ups)."""
    pytest.importorskip("vllm")
    pytest.importorskip("ray.data.llm")
    from pipelines.core.config import SamplerConfig
    from samplers.ray_data_backend import RayDataSampler

    cfg = SamplerConfig(name="ray_data", k=2, max_new_tokens=8, temperature=0.8,
                        engine_kwargs=vllm_cpu_engine(2048),
                        ray_data={"batch_size": 4, "placement_group_config": {"bundles": [{"CPU": 1}]}})
    sampler = RayDataSampler(cfg)
    convs = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]
    out = sampler.generate(convs, 2, [5, 6])
    assert [len(g) for g in out] == [2, 2]
    for gens in out:
        for g in gens:
            assert g.text and 1 <= g.completion_tokens <= 8 and g.prompt_tokens > 5
            assert g.logprob_sum is not None and g.logprob_sum < 0
            assert g.finish_reason in ("stop", "length")
    # k rows with n=1 and seeds seed+j sample what one n=k request with that seed samples in vLLM itself
    from samplers.vllm_backend import VLLMSampler
    same = VLLMSampler(cfg.model_copy(update={"name": "vllm"})).generate(convs, 2, [5, 6])
    assert [[g.text for g in gens] for gens in out] == [[g.text for g in gens] for gens in same]
    assert [[g.finish_reason for g in gens] for gens in out] == [[g.finish_reason for g in gens] for gens in same]
