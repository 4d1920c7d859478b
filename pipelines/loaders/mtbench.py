"""MT-Bench prompts (`prompts: {format: mtbench, system_prompt: null}`): the 80 first-turn questions, with GPT-4's
reference answers where MT-Bench has them. The data reader is scorers/mtbench.py (the judges use its prompts)."""

from __future__ import annotations

import pandas as pd

from pipelines.loaders.records import records_to_prompts
from scorers.mtbench import data_dir, questions, reference_answers


def load_mtbench(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PromptsConfig -> (prompts, drops): the 80 first turns, references attached where they exist."""
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
