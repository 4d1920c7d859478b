"""DSTC scoring: programs judged by tests the same policy wrote (no reference tests needed).

After "DSTC: Direct Preference Learning with Only Self-Generated Tests and Code" (Liu et al. 2024). For each
prompt the run's sampler writes `test_samples` responses of assert statements; their distinct, non-trivial
asserts that call the entry point (at most `max_tests`) are the prompt's tests. Every candidate program runs
against every test in the sandbox: a pass matrix (programs x tests) per prompt.

    weight_j = 1 if some program passes test j, else `unpassed_weight` (a test nobody passes is likely wrong)
    score_i  = sum_j weight_j * pass_ij / sum_j weight_j

Within a prompt the ranking is the pass count over tests some program passes (a test nobody passes adds 0 to
every row); the down-weighting keeps such tests from shrinking the scale of the score when it is summed with
other scorers. Pair with the `dstc` selection rule (chosen = most tests passed, rejected = fewest); the details
keep the whole matrix row, the tests and their pass counts, which `pipelines.pairs.selection.dstc.concatenate` uses
for DSTC's test-code concatenation.

The sampler: `params.sampler` fields override the candidates' own sampler name and model. To reuse the run's
engine (one copy in memory), give the same fields as the run's `sampler:` section (configs/humaneval.yaml does
this with a YAML anchor): samplers are cached by their full config.
"""

from __future__ import annotations

import ast
import json

import pandas as pd

from pipelines.core import ids, schema
from scorers import score_rows
from scorers.execution import assemble, extract_code, trusted_context
from scorers.sandbox import Job, Limits, check_available, run_programs

TEST_PROMPT = ("Write {n} different assert statements that test the Python function `{entry}` below on typical "
               "and edge-case inputs. Reply with one ```python code block containing only assert lines, each "
               "calling `{entry}`.\n\n```python\n{code}```")


def extract_asserts(text: str, entry_point: str | None) -> list[str]:
    """Distinct top-level asserts of a response (fenced block or raw text), one per test, normalised by ast."""
    code = extract_code(text, None)
    try:
        statements = ast.parse(code).body
    except SyntaxError:  # a truncated response: keep the lines that parse on their own
        statements = []
        for line in code.splitlines():
            try:
                statements += ast.parse(line.strip()).body
            except SyntaxError:
                continue
    out = []
    for stmt in statements:
        if not isinstance(stmt, ast.Assert) or isinstance(stmt.test, ast.Constant):
            continue
        calls = {n.func.id for n in ast.walk(stmt) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if entry_point and entry_point not in calls:
            continue
        source = ast.unparse(stmt)
        if source not in out:
            out.append(source)
    return out


def matrix_scores(passed: list[list[bool]], unpassed_weight: float) -> tuple[list[float], list[float]]:
    """(score per program, weight per test) from a pass matrix (rows: programs, columns: tests)."""
    n_tests = len(passed[0]) if passed else 0
    weights = [1.0 if any(row[j] for row in passed) else unpassed_weight for j in range(n_tests)]
    total = sum(weights)
    scores = [sum(w for w, ok in zip(weights, row) if ok) / total if total else 0.0 for row in passed]
    return scores, weights


class DSTCScorer:
    name = "dstc"

    def __init__(self, test_samples: int = 4, max_tests: int = 16, unpassed_weight: float = 0.1,
                 sampler: dict | None = None, timeout_s: float = 10.0, test_timeout_s: float = 2.0,
                 workers: int | None = None, seed: int = 0):
        if test_samples < 1 or max_tests < 1:
            raise ValueError("dstc: test_samples and max_tests must be >= 1")
        if not 0.0 <= unpassed_weight <= 1.0:
            raise ValueError(f"dstc: unpassed_weight must be in [0, 1], got {unpassed_weight}")
        check_available()
        self.test_samples, self.max_tests, self.unpassed_weight = test_samples, max_tests, unpassed_weight
        self.sampler_overrides = dict(sampler or {})
        self.limits = Limits(timeout_s=timeout_s, test_timeout_s=test_timeout_s)
        self.workers, self.seed = workers, seed

    def _sampler(self, candidates: pd.DataFrame):
        from pipelines.core.config import SamplerConfig
        from samplers import get_sampler
        fields = {"name": candidates["sampler"].iloc[0], "model": candidates["model"].iloc[0],
                  **self.sampler_overrides}
        return get_sampler(SamplerConfig.model_validate(fields))

    def generate_tests(self, prompts: pd.DataFrame, sampler) -> dict[str, list[str]]:
        """prompt_id -> its self-generated tests."""
        conversations, prompt_ids, entries = [], [], []
        for row in prompts.itertuples(index=False):
            meta = json.loads(row.meta) if isinstance(row.meta, str) and row.meta else {}
            entry = meta.get("entry_point")
            code = meta.get("code_prompt") or list(row.messages)[-1]["content"]
            conversations.append(schema.user_messages(TEST_PROMPT.format(n=self.max_tests, entry=entry or "the "
                                                                         "function", code=code)))
            prompt_ids.append(row.prompt_id)
            entries.append(entry)
        seeds = [int(ids.stable_hash("dstc-tests", self.seed, pid), 16) % (2**31 - 1) for pid in prompt_ids]
        outputs = sampler.generate(conversations, self.test_samples, seeds) if conversations else []
        tests = {}
        for pid, entry, gens in zip(prompt_ids, entries, outputs):
            found: list[str] = []
            for g in gens:
                found += [t for t in extract_asserts(g.text, entry) if t not in found]
            tests[pid] = found[:self.max_tests]
        return tests

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        used = prompts[prompts["prompt_id"].isin(candidates["prompt_id"])]
        tests = self.generate_tests(used, self._sampler(candidates)) if len(candidates) else {}
        by_id = used.set_index("prompt_id")
        jobs, job_rows = [], []
        for i, (pid, text) in enumerate(zip(candidates["prompt_id"], candidates["text"])):
            if not tests.get(pid):
                continue
            meta = json.loads(by_id.loc[pid, "meta"] or "{}")
            entry = meta.get("entry_point")
            program, _ = assemble(meta.get("code_prompt"), extract_code(text, entry), entry)
            jobs.append(Job(program, tests[pid], context=trusted_context(meta.get("code_prompt")), entry_point=entry))
            job_rows.append(i)
        results = dict(zip(job_rows, run_programs(jobs, self.limits, self.workers)))
        # pass matrix per prompt -> weighted scores
        rows_of: dict[str, list[int]] = {}
        for i in job_rows:
            rows_of.setdefault(candidates["prompt_id"].iloc[i], []).append(i)
        score_of, weights_of = {}, {}
        for pid, rows in rows_of.items():
            matrix = [[v.ok for v in results[i].verdicts] for i in rows]
            scores, weights = matrix_scores(matrix, self.unpassed_weight)
            score_of.update(zip(rows, scores))
            weights_of[pid] = (weights, [sum(col) for col in zip(*matrix)])
        scores, details, errors = [], [], []
        for i, pid in enumerate(candidates["prompt_id"]):
            if i not in results:
                scores.append(None), details.append(None)
                errors.append(f"no usable self-generated tests ({self.test_samples} samples gave no assert "
                              f"calling the entry point)")
                continue
            r = results[i]
            weights, pass_counts = weights_of[pid]
            scores.append(score_of[i])
            details.append({"tests": tests[pid], "passed": [v.ok for v in r.verdicts],
                            "reasons": [v.reason for v in r.verdicts], "weights": weights,
                            "test_pass_counts": pass_counts, "programs": len(rows_of[pid]), "reason": r.reason})
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)
