"""Evaluation on the held-out split: its config, and a run on the real embedded model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.evaluation.evaluate import EvalConfig
from tests.helpers import all_prompts


def test_eval_config_defaults_to_held_out_greedy():
    cfg = EvalConfig.model_validate({"prompts": {"limit": 3}, "sampler": {"max_new_tokens": 8}})
    assert cfg.prompts.split == "eval" and cfg.sampler.temperature == 0.0 and cfg.scorer_name() == "math_verify"
    assert EvalConfig.model_validate({"prompts": {"format": "humaneval"}}).scorer_name() == "execution"
    with pytest.raises(ValidationError, match="greedy"):
        EvalConfig(samples=2)


@pytest.mark.slow
def test_evaluate_math_on_embedded_model(tmp_path, smollm_dir):
    from pipelines.evaluation.evaluate import run
    out = tmp_path / "eval.json"
    result = run(EvalConfig.model_validate({"output": str(out), "prompts": {"limit": 3},
                                            "sampler": {"max_new_tokens": 24, "batch_prompts": 3}}))
    saved = json.loads(out.read_text())
    assert saved["n"] == 3 == len(saved["results"]) and saved["split"] == "eval"
    per_prompt = [r["accuracy"] for r in saved["results"]]
    assert saved["accuracy"] == pytest.approx(sum(per_prompt) / 3)
    for r in saved["results"]:
        assert len(r["responses"]) == 1 and r["reference"] is not None
        resp = r["responses"][0]
        assert resp["correct"] == (resp["score"] == 1.0) and resp["text"]
    held_out = set(all_prompts(split="eval")["prompt_id"])
    assert {r["prompt_id"] for r in saved["results"]} <= held_out
    # greedy is deterministic: the same model gives the same texts again
    again = run(EvalConfig.model_validate({"output": str(tmp_path / "again.json"), "prompts": {"limit": 3},
                                           "sampler": {"max_new_tokens": 24, "batch_prompts": 3}}))
    assert [r["responses"][0]["text"] for r in again["results"]] == \
        [r["responses"][0]["text"] for r in result["results"]]
