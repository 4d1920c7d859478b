"""Execution scoring on HumanEval: loader, program assembly, per-test split, scorer rows, DSTC scorer and rule."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from pipelines.core import ids, schema
from pipelines.core.config import PromptsConfig
from pipelines.loaders.humaneval import load_humaneval, problems
from scorers.execution import ExecutionScorer, assemble, extract_code, split_tests

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")


@pytest.fixture(scope="module")
def he():
    return problems()


def candidates_for(prompts: pd.DataFrame, texts_by_prompt: dict[str, list[str]]) -> pd.DataFrame:
    rows = []
    for pid, texts in texts_by_prompt.items():
        for j, text in enumerate(texts):
            rows.append(dict(candidate_id=ids.candidate_id(pid, "m", 0, j, text), prompt_id=pid, sample_index=j,
                             text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                             logprob_sum=-1.0, sampler="transformers", model="m", seed=0))
    return schema.frame(rows, schema.CANDIDATES)


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


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "Example:\n```python\nprint(1)\n```\nSolution:\n```python\ndef f(x):\n    return x\n```\nDone."
    assert extract_code(text, "f") == "def f(x):\n    return x"
    assert extract_code(text, None) == "print(1)"
    assert extract_code("```python\ndef f(x):\n    return x", "f") == "def f(x):\n    return x"  # unclosed
    assert extract_code("    return x\n", "f") == "    return x"  # raw body keeps its indent


def test_assemble_full_function_body_and_unindented_body():
    prompt = "import math\n\ndef helper(y):\n    return y\n\n\ndef f(x):\n    \"\"\"doc\"\"\"\n"
    program, how = assemble(prompt, "def f(x):\n    return math.floor(helper(x))", "f")
    assert how == "full_function" and program.startswith("import math") and "def helper" in program
    assert program.count("def f(") == 1
    program, how = assemble(prompt, "    return x + 1", "f")
    assert how == "body" and program.endswith("    return x + 1\n")
    program, how = assemble(prompt, "return x + 1", "f")
    assert how == "body" and program.endswith("    return x + 1\n")
    _, how = assemble(prompt, "this is not code (", "f")
    assert how == "unparsable"


def test_split_tests_one_test_per_assert_statement_keeping_setup_in_order():
    code = ("METADATA = {}\n\ndef check(candidate):\n    import math\n    assert candidate(1) == 2\n"
            "    x = 3\n    assert candidate(x) == 4, 'msg'\n    assert True\n    for i in range(3):\n"
            "        assert candidate(i) == i + 1\n")
    setup, tests = split_tests(code, "f")
    assert setup.endswith("candidate = f\n") and "def check" in setup
    assert tests == ["import math\nassert candidate(1) == 2", "x = 3\nassert candidate(x) == 4, 'msg'",
                     "for i in range(3):\n    assert candidate(i) == i + 1"]
    assert split_tests("assert g(1) == 1\nassert g(2) == 2\n", None) == ("", ["assert g(1) == 1",
                                                                           "assert g(2) == 2"])
    assert split_tests("def check(candidate):\n    candidate(1)\n", "f")[1] == ["check(f)"]  # no assert


def test_split_counts_on_humaneval(he):
    counts = [len(split_tests(p["test"], p["entry_point"])[1]) for p in he]
    assert min(counts) >= 1 and sum(counts) > 2 * len(he)  # most problems split into several tests


@needs_root
def test_every_canonical_solution_passes_and_corrupted_ones_fail(he):
    prompts, _ = load_humaneval(PromptsConfig(format="humaneval", limit=None))
    by_task = {json.loads(m)["task_id"]: pid for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    texts = {by_task[p["task_id"]]: [p["canonical_solution"],
                                      f"```python\n{p['prompt']}{p['canonical_solution']}```",
                                      "    return None\n"] for p in he}
    cands = candidates_for(prompts, texts)
    scores = ExecutionScorer(timeout_s=10, test_timeout_s=5).score(cands, prompts)
    assert len(scores) == len(cands) and scores["error"].isna().all()
    merged = cands.merge(scores, on="candidate_id")
    canonical = merged[merged["sample_index"] < 2]
    assert (canonical["score"] == 1.0).all(), canonical[canonical["score"] < 1][["prompt_id_x", "details"]]
    corrupted = merged[merged["sample_index"] == 2]
    # `return None` happens to satisfy a few checks partially, never all of them
    assert (corrupted["score"] < 1.0).all()
    d = json.loads(corrupted["details"].iloc[0])
    assert d["reason"] in ("wrong_answer", "runtime_error") and d["total"] == len(d["verdicts"])


@needs_root
def test_scorer_reports_partial_credit_and_reasons():
    prompts = schema.frame([dict(prompt_id="p", source="s", row=1, messages=[{"role": "user", "content": "x"}],
                                 reference="def check(candidate):\n    assert candidate(1) == 1\n"
                                           "    assert candidate(2) == 4\n    assert candidate(0) == 0\n",
                                 meta=json.dumps({"entry_point": "sq", "code_prompt": "def sq(x):\n"})),
                            dict(prompt_id="q", source="s", row=2, messages=[{"role": "user", "content": "y"}],
                                 reference=None, meta="{}")], schema.PROMPTS)
    cands = candidates_for(prompts, {"p": ["    return x", "def sq(x):\n    return x * x", "    while True: pass"],
                                     "q": ["anything"]})
    out = ExecutionScorer(timeout_s=6, test_timeout_s=1).score(cands, prompts).set_index("candidate_id")
    s = out.loc[cands["candidate_id"]]
    assert s["score"].iloc[0] == pytest.approx(2 / 3) and s["score"].iloc[1] == 1.0
    assert s["score"].iloc[2] == 0.0 and json.loads(s["details"].iloc[2])["reason"] == "timeout"
    assert pd.isna(s["score"].iloc[3]) and "no tests" in s["error"].iloc[3]
    assert [v["reason"] for v in json.loads(s["details"].iloc[0])["verdicts"]] == ["passed", "wrong_answer",
                                                                                    "passed"]


def test_dstc_assert_extraction_and_matrix_weights():
    from scorers.dstc import extract_asserts, matrix_scores
    text = ("```python\nassert f(1) == 2\nassert f(1) == 2\nassert True\nassert g(3) == 1\n"
            "assert f(2) == 3  # ok\nassert f(\n```")
    assert extract_asserts(text, "f") == ["assert f(1) == 2", "assert f(2) == 3"]
    scores, weights = matrix_scores([[True, False, False], [True, True, False]], unpassed_weight=0.5)
    assert weights == [1.0, 1.0, 0.5]
    assert scores == pytest.approx([1 / 2.5, 2 / 2.5])


class ScriptedSampler:
    """Stands in for the policy when it writes tests: two test responses, one of them with a wrong test."""
    def generate(self, conversations, n, seeds):
        from samplers import Generation
        texts = ["```python\nassert sq(2) == 4\nassert sq(3) == 9\n```", "assert sq(1) == 5\nassert sq(0) == 0"]
        return [[Generation(texts[j % 2], "stop", 1, 1, -1.0) for j in range(n)] for _ in conversations]


@needs_root
def test_dstc_scorer_rule_and_concatenation(monkeypatch):
    from pipelines.pairs.dstc_concat import concatenate
    from pipelines.pairs.selection import common
    from pipelines.pairs.selection.dstc import dstc
    from scorers.dstc import DSTCScorer
    monkeypatch.setattr(DSTCScorer, "_sampler", lambda self, c: ScriptedSampler())
    prompts = schema.frame([dict(prompt_id="p", source="s", row=1, messages=[{"role": "user", "content": "x"}],
                                 reference=None, meta=json.dumps({"entry_point": "sq",
                                                                  "code_prompt": "def sq(x):\n"}))],
                           schema.PROMPTS)
    cands = candidates_for(prompts, {"p": ["    return x", "    return x * x", "    return 0"]})
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


class ScriptedPolicy:
    """Stands in for the policy of a whole build: for HumanEval/0 it writes one right and one wrong program when
    asked for k programs, and asserts (one of them wrong) when the dstc scorer asks it for tests."""
    name, model_name, max_context = "transformers", "scripted", 4096
    programs = ["```python\n{solution}```", "```python\ndef has_close_elements(numbers, threshold):\n"
                "    return False\n```"]
    tests = ["assert has_close_elements([1.0, 1.05], 0.1) == True\nassert has_close_elements([1.0, 3.0], 0.5) == False",
             "assert has_close_elements([1.0, 1.05], 0.1) == True"]

    def __init__(self, solution: str):
        self.solution = solution

    def prompt_tokens(self, messages):
        return 10

    def generate(self, conversations, n, seeds, **kw):
        from samplers import Generation
        asks_for_tests = "assert statements" in conversations[0][-1]["content"]
        texts = self.tests if asks_for_tests else [t.format(solution=self.solution) for t in self.programs]
        return [[Generation(texts[j % len(texts)], "stop", 10, 10, -1.0) for j in range(n)] for _ in conversations]


@needs_root
def test_build_pairs_concatenates_dstc_tests_inside_the_build(tmp_path, monkeypatch, he):
    """selection.dstc_concat: the build itself appends the most trusted passed test to the chosen program and the
    most doubtful failed test to the rejected one (this used to be a separate CLI over a finished run)."""
    import samplers
    from pipelines.pairs.build import run_local
    from pipelines.pairs.config import BuildConfig
    policy = ScriptedPolicy(he[0]["prompt"] + he[0]["canonical_solution"])
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
