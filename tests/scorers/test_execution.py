"""Execution scoring on HumanEval: program assembly, per-test split, scorer rows with partial credit and reasons.

The sandbox under it has its own suite (test_sandbox.py); the DSTC scorer: test_dstc.py.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import PromptsConfig
from pipelines.loaders.humaneval import load_humaneval, problems
from scorers.execution import ExecutionScorer, assemble, extract_code, split_tests
from tests.helpers import candidates_frame, needs_root


@pytest.fixture(scope="module")
def he():
    return problems()


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


@pytest.mark.slow  # 164 x 3 programs in the sandbox
@needs_root
def test_every_canonical_solution_passes_and_corrupted_ones_fail(he):
    prompts, _ = load_humaneval(PromptsConfig(format="humaneval", limit=None))
    by_task = {json.loads(m)["task_id"]: pid for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    texts = {by_task[p["task_id"]]: [p["canonical_solution"],
                                      f"```python\n{p['prompt']}{p['canonical_solution']}```",
                                      "    return None\n"] for p in he}
    cands = candidates_frame(texts)
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
    cands = candidates_frame({"p": ["    return x", "def sq(x):\n    return x * x", "    while True: pass"],
                                     "q": ["anything"]})
    out = ExecutionScorer(timeout_s=6, test_timeout_s=1).score(cands, prompts).set_index("candidate_id")
    s = out.loc[cands["candidate_id"]]
    assert s["score"].iloc[0] == pytest.approx(2 / 3) and s["score"].iloc[1] == 1.0
    assert s["score"].iloc[2] == 0.0 and json.loads(s["details"].iloc[2])["reason"] == "timeout"
    assert pd.isna(s["score"].iloc[3]) and "no tests" in s["error"].iloc[3]
    assert [v["reason"] for v in json.loads(s["details"].iloc[0])["verdicts"]] == ["passed", "wrong_answer",
                                                                                    "passed"]
