"""Held-out split (train and eval never overlap) and the evaluation flow on the real embedded model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.core.config import PromptsConfig
from pipelines.evaluation.evaluate import EvalConfig
from pipelines.loaders import load_prompts, split_of


def _ids(**kw):
    prompts, _ = load_prompts(PromptsConfig(limit=None, **kw))
    return prompts


def test_train_and_eval_splits_are_disjoint_and_cover_the_file():
    train, held_out, everything = _ids(split="train"), _ids(split="eval"), _ids(split="all")
    assert not set(train["prompt_id"]) & set(held_out["prompt_id"])
    assert set(train["prompt_id"]) | set(held_out["prompt_id"]) == set(everything["prompt_id"])
    assert 0.1 < len(held_out) / len(everything) < 0.3  # eval_fraction 0.2 of 240 prompts
    # deterministic, and independent of the system prompt (only the user turn is hashed)
    other_system = _ids(split="eval", system_prompt="Be brief.")
    assert other_system["row"].tolist() == held_out["row"].tolist()
    texts = lambda df: {m[-1]["content"] for m in df["messages"]}  # noqa: E731
    assert not texts(train) & texts(held_out)


def test_limit_counts_prompts_of_the_split():
    first = _ids(split="eval").head(5)
    limited, _ = load_prompts(PromptsConfig(limit=5, split="eval"))
    assert limited["prompt_id"].tolist() == first["prompt_id"].tolist()
    assert all(split_of(list(m), 0.2) == "eval" for m in limited["messages"])


def test_humaneval_split_is_disjoint():
    train, held_out = _ids(split="train", format="humaneval"), _ids(split="eval", format="humaneval")
    assert len(train) + len(held_out) == 164 and not set(train["prompt_id"]) & set(held_out["prompt_id"])


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
    held_out = set(_ids(split="eval")["prompt_id"])
    assert {r["prompt_id"] for r in saved["results"]} <= held_out
    # greedy is deterministic: the same model gives the same texts again
    again = run(EvalConfig.model_validate({"output": str(tmp_path / "again.json"), "prompts": {"limit": 3},
                                           "sampler": {"max_new_tokens": 24, "batch_prompts": 3}}))
    assert [r["responses"][0]["text"] for r in again["results"]] == \
        [r["responses"][0]["text"] for r in result["results"]]


@pytest.mark.slow
def test_evaluate_prefect_flow(tmp_path, prefect_harness, smollm_dir):
    from flows.evaluate import main
    out = tmp_path / "flow.json"
    assert main(["--output", str(out), "--prompts.limit", "1", "--sampler.max_new_tokens", "8"]) == 0
    saved = json.loads(out.read_text())
    assert saved["n"] == 1 and saved["split"] == "eval" and saved["config"]["sampler"]["temperature"] == 0.0
