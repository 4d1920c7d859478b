"""The held-out split: train and eval never overlap, cover the file, and do not depend on the system prompt."""

from __future__ import annotations

from pipelines.core.config import PromptsConfig
from pipelines.loaders import load_prompts, split_of
from tests.helpers import all_prompts


def test_train_and_eval_splits_are_disjoint_and_cover_the_file():
    train, held_out, everything = all_prompts(split="train"), all_prompts(split="eval"), all_prompts(split="all")
    assert not set(train["prompt_id"]) & set(held_out["prompt_id"])
    assert set(train["prompt_id"]) | set(held_out["prompt_id"]) == set(everything["prompt_id"])
    assert 0.1 < len(held_out) / len(everything) < 0.3  # eval_fraction 0.2
    # deterministic, and independent of the system prompt (only the user turn is hashed)
    other_system = all_prompts(split="eval", system_prompt="Be brief.")
    assert other_system["row"].tolist() == held_out["row"].tolist()
    texts = lambda df: {m[-1]["content"] for m in df["messages"]}  # noqa: E731
    assert not texts(train) & texts(held_out)


def test_limit_counts_prompts_of_the_split():
    first = all_prompts(split="eval").head(5)
    limited, _ = load_prompts(PromptsConfig(limit=5, split="eval"))
    assert limited["prompt_id"].tolist() == first["prompt_id"].tolist()
    assert all(split_of(list(m), 0.2) == "eval" for m in limited["messages"])


def test_humaneval_split_is_disjoint():
    train, held_out = all_prompts(split="train", format="humaneval"), all_prompts(split="eval", format="humaneval")
    assert len(train) + len(held_out) == 164 and not set(train["prompt_id"]) & set(held_out["prompt_id"])
