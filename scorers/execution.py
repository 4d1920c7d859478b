"""Test-execution scoring: run each candidate program with its prompt's tests in the sandbox (scorers/sandbox.py).

score = fraction of the prompt's tests the program passes; details keep the per-test verdicts, the failure
reason (wrong_answer, runtime_error, syntax_error, timeout, memory, output_limit, crash, early_exit,
not_serializable, tampered: see scorers/sandbox.py), what a tampering program changed, and the stderr tail.
The tests run in a process of their own and decide the verdicts; the program only answers calls with plain
values (docs/scorers.md, "What the reward is protected against").

Where things come from (the HumanEval loader, pipelines/loaders/humaneval.py, fills them; any loader may):
- `reference`: the test code. A `check(candidate)` function (HumanEval style) or plain top-level asserts.
- `meta.entry_point`: the function under test; `meta.code_prompt`: the code the model was asked to complete.

Program assembly (`assemble`): the code is the fenced ```python block of the response that defines the entry
point (else the first block; an unclosed block at the end of a truncated response counts; no fence: the raw
text). A completion that defines `def <entry_point>(` at top level is a *full function*: the code prompt's
text before its own `def <entry_point>` (imports, helper functions) is prepended. Otherwise it is a *body*: the
code prompt is prepended as is (HumanEval's own convention), re-indented when the model wrote it at column 0.

Per-test verdicts (`split_tests`): the statements of `check`'s body are split at each statement that contains
an `assert`; every such statement (with the non-assert statements since the previous one, e.g. `import math`
or a seeded RNG) is one test, run in order in one namespace, so the split run executes exactly what `check`
would. A `for` loop of asserts is one test. Constant asserts (`assert True`) are not tests. Test code with no
`check` is split the same way at module level. When the test code does not parse, or no assert is found, the
whole `check(candidate)` call is the only test.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap

import pandas as pd

from scorers import score_rows
from scorers.sandbox import Job, Limits, Result, check_available, run_programs

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code of a response: a fenced block (preferring one that defines the entry point) or the raw text."""
    blocks = [(lang.lower(), body) for lang, body in FENCE.findall(text)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")] or blocks
    if not blocks:
        return text.rstrip()
    if entry_point:
        for _, body in blocks:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.M):
                return body.rstrip()
    return blocks[0][1].rstrip()


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return bool(re.search(rf"^def\s+{re.escape(name)}\s*\(", textwrap.dedent(code), re.M))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def _compiles(code: str) -> bool:
    try:
        compile(code, "solution.py", "exec")
        return True
    except (SyntaxError, ValueError):
        return False


def assemble(code_prompt: str | None, completion: str, entry_point: str | None) -> tuple[str, str]:
    """(program, how): how is full_function | body | code (no code prompt) | unparsable."""
    if not code_prompt or not entry_point:
        return completion, "code"
    if _defines(completion, entry_point):
        match = re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code_prompt, re.M)
        prefix = code_prompt[:match.start()] if match else ""
        return prefix + textwrap.dedent(completion) + "\n", "full_function"
    body = completion if completion.endswith("\n") else completion + "\n"
    candidates = [code_prompt + body]
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        candidates.append(code_prompt + textwrap.indent(body, "    "))
    for program in candidates:
        if _compiles(program):
            return program, "body"
    return candidates[0], "unparsable"


def _split_statements(body: list[ast.stmt]) -> list[str]:
    tests, pending = [], []
    for stmt in body:
        source = ast.unparse(stmt)
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant):
            continue  # `assert True`: always passes, would give free credit
        if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
            tests.append("\n".join(pending + [source]))
            pending = []
        else:
            pending.append(source)
    if pending and tests:
        tests[-1] += "\n" + "\n".join(pending)
    return tests


def split_tests(test_code: str, entry_point: str | None) -> tuple[str, list[str]]:
    """(setup, tests) for the sandbox; see the module docstring."""
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        tree = None
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None) \
        if tree else None
    if check is not None and entry_point:
        arg = check.args.args[0].arg if check.args.args else "candidate"
        setup = f"{test_code}\n{arg} = {entry_point}\n"
        return setup, (_split_statements(check.body) or [f"check({entry_point})"])
    if tree is not None and check is None:
        tests = _split_statements(tree.body)
        if tests:
            return "", tests
    if entry_point:
        return f"{test_code}\n", [f"check({entry_point})"]
    return "", [test_code]


def trusted_context(code_prompt: str | None) -> str:
    """The code prompt, run in the sandbox's test process before the tests: the helper functions the tests call
    (HumanEval's `encode_cyclic` beside `decode_cyclic`) are then the dataset's, not the program's."""
    return code_prompt if code_prompt and _compiles(code_prompt) else ""


class ExecutionScorer:
    name = "execution"

    def __init__(self, timeout_s: float = 10.0, test_timeout_s: float = 3.0, memory_mb: int = 1024,
                 cpu_s: int = 10, workers: int | None = None, split: bool = True):
        check_available()  # a missing sandbox is a clear error at start, not thousands of error rows
        self.limits = Limits(timeout_s=timeout_s, test_timeout_s=test_timeout_s, memory_mb=memory_mb, cpu_s=cpu_s)
        self.workers, self.split = workers, split

    def jobs(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> list[tuple[Job | None, dict | str]]:
        """One (job, info) per candidate; (None, error text) when the prompt has no tests."""
        by_id = prompts.set_index("prompt_id")
        out = []
        for pid, text in zip(candidates["prompt_id"], candidates["text"]):
            row = by_id.loc[pid]
            tests_code = row["reference"]
            if tests_code is None or pd.isna(tests_code) or not str(tests_code).strip():
                out.append((None, "prompt has no tests (reference is empty)"))
                continue
            meta = json.loads(row["meta"]) if isinstance(row["meta"], str) and row["meta"] else {}
            entry = meta.get("entry_point")
            program, how = assemble(meta.get("code_prompt"), extract_code(text, entry), entry)
            if self.split:
                setup, tests = split_tests(str(tests_code), entry)
            else:
                setup, tests = f"{tests_code}\n", [f"check({entry})" if entry else str(tests_code)]
            out.append((Job(program, tests, setup, context=trusted_context(meta.get("code_prompt")),
                            entry_point=entry), {"assembly": how}))
        return out

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        planned = self.jobs(candidates, prompts)
        runnable = [job for job, _ in planned if job is not None]
        results = iter(run_programs(runnable, self.limits, self.workers))
        scores, details, errors = [], [], []
        for job, info in planned:
            if job is None:
                scores.append(None), details.append(None), errors.append(info)
                continue
            result: Result = next(results)
            scores.append(result.fraction)
            details.append(result_details(result, info))
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)


def result_details(result: Result, info: dict | None = None) -> dict:
    return {**(info or {}), "passed": result.passed, "total": len(result.verdicts), "reason": result.reason,
            "verdicts": [{"ok": v.ok, "reason": v.reason, **({"error": v.error} if v.error else {})}
                         for v in result.verdicts],
            "exit": result.exit, "seconds": result.seconds, "stderr_tail": result.stderr_tail[-500:],
            **result.extra}  # `tampered`: what the program changed, when it did
