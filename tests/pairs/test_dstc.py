"""DSTC in the pairs build: the dstc scorer's pass matrix feeds the dstc rule, and the chosen/rejected programs get
their most/least trusted self-generated test appended (selection.dstc_concat), with a scripted policy (no model).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.loaders.humaneval import problems
from tests.helpers import ScriptedSampler, candidates_frame, generations, needs_root


@pytest.fixture(scope="module")
def he():
    return problems()


def writes_tests(conversation, n, **options):
    """The policy when it writes tests: two test responses, one of them with a wrong test."""
    return generations(["```python\nassert sq(2) == 4\nassert sq(3) == 9\n```", "assert sq(1) == 5\nassert sq(0) == 0"],
                       n, tokens=(1, 1))


@needs_root
def test_dstc_scorer_rule_and_concatenation(monkeypatch):
    from pipelines.pairs.dstc_concat import concatenate
    from pipelines.pairs.selection import common
    from pipelines.pairs.selection.dstc import dstc
    from scorers.dstc import DSTCScorer
    monkeypatch.setattr(DSTCScorer, "_sampler", lambda self, c: ScriptedSampler(writes_tests))
    prompts = schema.frame([dict(prompt_id="p", source="s", row=1, messages=[{"role": "user", "content": "x"}],
                                 reference=None, meta=json.dumps({"entry_point": "sq",
                                                                  "code_prompt": "def sq(x):\n"}))],
                           schema.PROMPTS)
    cands = candidates_frame({"p": ["    return x", "    return x * x", "    return 0"]})
    scores = DSTCScorer(test_samples=2, unpassed_weight=0.0).score(cands, prompts)
    d = json.loads(scores["details"].iloc[0])
    assert d["tests"] == ["assert sq(2) == 4", "assert sq(3) == 9", "assert sq(1) == 5", "assert sq(0) == 0"]
    # pass matrix: x -> [F, F, F, T]; x*x -> [T, T, F, T]; 0 -> [F, F, F, T]; sq(1) == 5 nobody passes: weight 0
    assert d["weights"] == [1.0, 1.0, 0.0, 1.0] and d["test_pass_counts"] == [1, 1, 0, 3]
    assert list(scores["score"]) == pytest.approx([1 / 3, 1.0, 1 / 3])
    pool = cands[["prompt_id", "candidate_id", "sample_index"]].assign(reward=scores["score"].to_numpy())
    pairs = dstc(pool)
    assert pairs["chosen_id"].iloc[0] == cands["candidate_id"].iloc[1]
    assert pairs["rejected_id"].iloc[0] == cands["candidate_id"].iloc[0]  # tie with sample 2: lower index
    valid, drops = common.prepare(pool, "dstc")
    assert len(valid) == 3 and drops.empty
    full = pd.DataFrame({"chosen_id": pairs["chosen_id"], "rejected_id": pairs["rejected_id"],
                         "chosen": [[{"role": "assistant", "content": "    return x * x"}]],
                         "rejected": [[{"role": "assistant", "content": "    return x"}]]})
    out, unchanged = concatenate(full, scores)
    assert unchanged == 0
    assert out["chosen"].iloc[0][0]["content"].endswith("```python\nassert sq(0) == 0\n```")  # most passed
    assert out["rejected"].iloc[0][0]["content"].endswith("```python\nassert sq(1) == 5\n```")  # least passed


def scripted_policy(solution: str) -> ScriptedSampler:
    """The policy of a whole build: for HumanEval/0 it writes one right and one wrong program when asked for k
    programs, and asserts (one of them wrong) when the dstc scorer asks it for tests."""
    programs = [f"```python\n{solution}```", "```python\ndef has_close_elements(numbers, threshold):\n"
                "    return False\n```"]
    tests = ["assert has_close_elements([1.0, 1.05], 0.1) == True\nassert has_close_elements([1.0, 3.0], 0.5) == False",
             "assert has_close_elements([1.0, 1.05], 0.1) == True"]

    def reply(conversation, n, **options):
        return generations(tests if "assert statements" in conversation[-1]["content"] else programs, n)
    return ScriptedSampler(reply)


@needs_root
def test_build_pairs_concatenates_dstc_tests_inside_the_build(tmp_path, monkeypatch, he):
    """selection.dstc_concat: the build itself appends the most trusted passed test to the chosen program and the
    most doubtful failed test to the rejected one (this used to be a separate CLI over a finished run)."""
    import samplers
    from pipelines.pairs.build import run_local
    from pipelines.pairs.config import BuildConfig
    policy = scripted_policy(he[0]["prompt"] + he[0]["canonical_solution"])
    monkeypatch.setattr(samplers, "get_sampler", lambda cfg: policy)
    config = BuildConfig.model_validate({
        "output_dir": str(tmp_path), "run_id": "dstc",
        "prompts": {"format": "humaneval", "limit": 1, "reference_field": None, "system_prompt": None},
        "sampler": {"k": 2}, "scorers": [{"name": "dstc", "params": {"test_samples": 2}}],
        "selection": {"rule": "dstc", "dstc_concat": True}})
    manifest = run_local(config)
    pairs = pd.read_parquet(f"{tmp_path}/dstc/pairs.parquet")
    assert len(pairs) == 1 and manifest["counts"]["dstc_concatenated"] == {"pairs": 1, "unchanged": 0}
    chosen, rejected = pairs["chosen"].iloc[0][0]["content"], pairs["rejected"].iloc[0][0]["content"]
    assert chosen.startswith("```python\nfrom typing import List") and "return False" in rejected
    # pass matrix: right program [T, T], `return False` [F, T]: the chosen gets the test both pass, the rejected
    # the test it fails that the fewest programs pass
    assert chosen.endswith("```python\nassert has_close_elements([1.0, 3.0], 0.5) == False\n```")
    assert rejected.endswith("```python\nassert has_close_elements([1.0, 1.05], 0.1) == True\n```")
    with pytest.raises(ValueError, match="needs the dstc scorer"):
        BuildConfig.model_validate({"selection": {"dstc_concat": True}})


def test_registries_know_the_new_components():
    from pipelines.loaders import LOADERS
    from pipelines.pairs.selection import RULES
    from scorers import SCORERS
    assert LOADERS["humaneval"] == "pipelines.loaders.humaneval:load_humaneval"
    assert "execution" in SCORERS and "dstc" in SCORERS and "dstc" in RULES
