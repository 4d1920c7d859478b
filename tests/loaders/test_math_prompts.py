"""data/make_math_prompts.py: deterministic, the shipped file is its output, answers right, split big enough."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pipelines.core.config import PromptsConfig
from pipelines.core.schema import user_messages
from pipelines.loaders import load_prompts, split_of

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_math_prompts", DATA / "make_math_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(generator):
    return generator.make()


def test_same_seed_same_bytes_and_the_shipped_file_is_current(generator, rows, tmp_path):
    generator.write(tmp_path / "a.jsonl", rows)
    generator.write(tmp_path / "b.jsonl", generator.make())
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() == (DATA / "math_prompts.jsonl").read_bytes(), \
        "data/math_prompts.jsonl is stale: run python data/make_math_prompts.py"
    assert generator.make(seed=7) != rows


def test_counts_fields_and_unique_prompts(generator, rows):
    assert len(rows) >= 2500
    assert all(set(r) == {"id", "prompt", "answer", "family", "difficulty"} for r in rows)
    assert len({r["id"] for r in rows}) == len({r["prompt"] for r in rows}) == len(rows)
    cells = Counter((r["family"], r["difficulty"]) for r in rows)
    expected = {(f, level): n for f, levels in generator.CELL_SIZES.items() for level, n in levels.items()}
    assert dict(cells) == expected
    assert len({r["family"] for r in rows[:32]}) >= 5  # the default run's first 32 prompts mix families


def test_one_cell_does_not_change_another(generator, rows):
    sizes = {f: dict(levels) for f, levels in generator.CELL_SIZES.items()}
    sizes["sum"][2] -= 10
    smaller = generator.make(sizes=sizes)
    def of(rs, family):
        return [r["prompt"] for r in rs if r["family"] == family]
    assert of(smaller, "word_sub") == of(rows, "word_sub")


def _expected(row) -> int:
    """The answer recomputed from the prompt's own numbers and words, independently of the generator's code."""
    text = row["prompt"]
    n = [int(x) for x in re.findall(r"\d+", text)]
    if text.startswith("Subtract"):  # "Subtract b from a."
        n = n[::-1]
    if row["family"] == "two_step":
        if "boxes of" in text:
            return n[0] * n[1] - n[2]
        return n[0] + n[1] - n[2] if "loses" in text else n[0] + n[1] + n[2]
    operation = {"sum": "add", "word_add": "add", "difference": "sub", "word_sub": "sub", "product": "mul",
                 "word_mul": "mul", "quotient": "div", "word_div": "div"}[row["family"]]
    a, b = n
    if operation == "div":
        assert a % b == 0, row
        return a // b
    return {"add": a + b, "sub": a - b, "mul": a * b}[operation]


def test_answers_are_right_and_positive(rows):
    assert len(rows) == sum(1 for r in rows if int(r["answer"]) == _expected(r) > 0)


def test_no_problem_is_another_with_other_names_or_objects(generator, rows):
    def shape(prompt):
        for word in generator.NAMES + generator.THINGS:
            prompt = re.sub(rf"\b{word}\b", "_", prompt)
        return prompt
    assert len({(r["family"], shape(r["prompt"])) for r in rows}) == len(rows)


def test_split_gives_500_held_out_prompts_the_train_split_never_sees():
    everything, _ = load_prompts(PromptsConfig(limit=None))
    train, _ = load_prompts(PromptsConfig(limit=None, split="train"))
    held_out, _ = load_prompts(PromptsConfig(limit=None, split="eval"))
    assert len(held_out) >= 500
    assert len(train) + len(held_out) == len(everything)
    assert not set(train["prompt_id"]) & set(held_out["prompt_id"])
    user = lambda m: next(x["content"] for x in m if x["role"] == "user")  # noqa: E731
    assert not {user(m) for m in train["messages"]} & {user(m) for m in held_out["messages"]}
    # the split does not depend on the system prompt
    assert all(split_of(user_messages(user(m)), 0.2) == "eval" for m in held_out["messages"])


def test_shipped_file_is_jsonl_with_integer_answers():
    lines = (DATA / "math_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    assert all(re.fullmatch(r"\d+", json.loads(line)["answer"]) for line in lines)
