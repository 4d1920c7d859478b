"""The HumanEval loader: 164 problems with their tests, entry points and code prompts."""

from __future__ import annotations

import json

from pipelines.core.config import PromptsConfig
from pipelines.loaders.humaneval import load_humaneval


def test_loader_reads_the_164_problems_with_tests_and_entry_points():
    prompts, drops = load_humaneval(PromptsConfig(format="humaneval", system_prompt="Be brief.", limit=None))
    assert len(prompts) == 164 and len(drops) == 0
    first = prompts.iloc[0]
    meta = json.loads(first["meta"])
    assert meta["task_id"] == "HumanEval/0" and meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first["reference"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert meta["code_prompt"] in first["messages"][1]["content"]
    assert prompts["prompt_id"].is_unique
    limited, _ = load_humaneval(PromptsConfig(format="humaneval", limit=3))
    assert list(limited["row"]) == [1, 2, 3]
