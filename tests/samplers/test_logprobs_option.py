"""sampler.logprobs: what each engine is asked for, and the build refusing a scorer that would go without them.

Only the requests are checked here (no engine starts): the replies' logprob_sum is tested per backend in
test_vllm.py, test_ray_data.py and test_openai_faults.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.core.config import SamplerConfig
from pipelines.pairs.config import BuildConfig


def test_logprobs_are_on_by_default_and_the_default_build_needs_them():
    cfg = BuildConfig()
    assert cfg.sampler.logprobs is True and "confidence" in [s.name for s in cfg.scorers]


def test_a_build_with_the_confidence_scorer_refuses_logprobs_off():
    with pytest.raises(ValidationError, match="scorer confidence needs the sampled tokens' log-probs"):
        BuildConfig.model_validate({"sampler": {"logprobs": False}})
    # without confidence nothing reads logprob_sum: allowed
    cfg = BuildConfig.model_validate({"sampler": {"logprobs": False}, "scorers": [{"name": "math_verify"}]})
    assert cfg.sampler.logprobs is False


def test_cli_flag_turns_them_off(capsys):
    import json

    from flows.build_pairs import main
    assert main(["--sampler.logprobs", "false", "--scorers", '[{"name": "math_verify"}]', "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["sampler"]["logprobs"] is False


@pytest.mark.parametrize("logprobs, asked", [(True, 0), (False, None)])
def test_vllm_sampling_params(logprobs, asked):
    pytest.importorskip("vllm")
    from samplers.vllm_backend import VLLMSampler
    sampler = object.__new__(VLLMSampler)  # sampling_params reads only the config: no engine needed
    sampler.cfg = SamplerConfig(name="vllm", logprobs=logprobs)
    params = sampler.sampling_params(4, [11, 12])
    assert [p.logprobs for p in params] == [asked, asked] and [p.seed for p in params] == [11, 12]


@pytest.mark.parametrize("logprobs", [True, False])
def test_ray_data_requests(logprobs):
    from samplers.ray_data_backend import RayDataSampler
    sampler = object.__new__(RayDataSampler)  # requests() reads only the config
    sampler.cfg = SamplerConfig(name="ray_data", logprobs=logprobs)
    rows = sampler.requests([[{"role": "user", "content": "q"}]], 2, [5], None, 16)
    assert [r["sampling_params"]["seed"] for r in rows] == [5, 6]
    assert all(("logprobs" in r["sampling_params"]) is logprobs for r in rows)
    if logprobs:
        assert {r["sampling_params"]["logprobs"] for r in rows} == {0}
