"""The executors of the run core (pipelines.core.executors) on Ray, without Prefect: build_pairs, build_step_pairs
and iterate's build phase run their batches as Ray tasks on a local 2-CPU cluster, with the real model, and give
what the local executor gives. (Ray under Prefect: tests/flows/test_ray_executor.py; the ray_data sampler:
tests/samplers/test_ray_data.py.)
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.pairs.build import run_local
from pipelines.pairs.config import BuildConfig
from tests.helpers import RAY_FLOAT_RTOL, local_ray, small_build_config, write_jsonl

pytest.importorskip("ray")


def _config(out, **kw) -> BuildConfig:
    return small_build_config(out, sampler={"k": 2, "max_new_tokens": 12}, **kw)


def test_executor_config():
    assert BuildConfig.model_validate({"executor": "ray"}).executor.name == "ray"  # the `executor: ray` shorthand
    with pytest.raises(ValueError, match="executor.name"):
        BuildConfig.model_validate({"executor": {"name": "nope"}})
    with pytest.raises(ValueError, match="ray only"):
        BuildConfig.model_validate({"executor": {"address": "auto"}})  # an address without ray would be ignored


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the executor tests below: run_batches finds it and leaves it running."""
    with local_ray() as ray:
        yield ray


def _sampler_untouched_here():
    import samplers
    return samplers._cached.cache_info()


@pytest.mark.slow
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
        pd.testing.assert_frame_equal(a, b, rtol=RAY_FLOAT_RTOL)
    assert on_ray["counts"] == local["counts"]


@pytest.mark.slow
def test_step_pairs_run_on_the_ray_executor(tmp_path, smollm_dir, ray_cluster):
    from pipelines.step_pairs.build import run_local as run_steps
    from pipelines.step_pairs.config import StepPairsConfig

    sums = write_jsonl(tmp_path / "sums.jsonl", [{"prompt": "What is 9 + 8?", "answer": "17"},
                                                 {"prompt": "What is 6 + 7?", "answer": "13"}])
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


@pytest.mark.slow
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
