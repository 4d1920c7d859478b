"""Records (row number, dict) -> the PROMPTS table plus drop rows, and the held-out split by prompt hash.

Every loader ends here, so the rules hold for all of them (each has a test):
- a missing prompt field is an error naming the source and row;
- an empty or non-string prompt, and a prompt that repeats an earlier one, becomes a drop row whose detail
  names the source and row: nothing is skipped silently.
A prompt field may hold plain text or a message list ([{"role": ..., "content": ...}, ...]). A conversation that
ends with assistant turns (UltraFeedback's `messages` or `chosen` column: the question and an answer) is the prompt
before those turns: the sampler answers it anew.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pandas as pd

from pipelines.core import ids, schema
from pipelines.core.errors import UserError


class PromptFileError(UserError, ValueError):
    """Bad input that makes the whole file unusable (as opposed to one bad row, which becomes a drop)."""


def _as_messages(value: Any, system: str | None) -> list[dict] | None:
    """Plain text or a message list to messages; None when the value is not a usable prompt."""
    if isinstance(value, str):
        return schema.user_messages(value, system) if value.strip() else None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        value = value.tolist()
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()  # the answer of a chat dataset's conversation: not part of the prompt
        if not any(m["content"].strip() for m in messages if m["role"] != "system"):
            return None
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        return messages
    return None


def _unusable(value: Any) -> str:
    """Why a prompt value is not a prompt, for the drop's detail."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value is None or (isinstance(value, str) and not value.strip()):
        kind = "empty"
    elif isinstance(value, list):
        kind = "a message list with no user content (or not role/content messages)"
    else:
        kind = type(value).__name__
    return f"prompt is {kind} ({str(value)[:60]!r})"


def split_of(messages: list[dict], eval_fraction: float) -> str:
    """"train" or "eval": a hash of the conversation without its system message, so the split of a prompt does
    not depend on the system prompt, the file order, the limit or the machine. The same fraction always gives
    the same split; train and eval never share a prompt (a repeated prompt lands in the same split)."""
    key = ids.stable_hash("split", [(m["role"], m["content"]) for m in messages if m["role"] != "system"])
    return "eval" if int(key, 16) % 1_000_000 < eval_fraction * 1_000_000 else "train"


def records_to_prompts(records: Iterator[tuple[int, dict]], source: str, prompt_field: str,
                       reference_field: str | None, system_prompt: str | None,
                       limit: int | None = None, split: str = "all",
                       eval_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, drops, first_seen = [], schema.DropLog(), {}
    n = 0
    for lineno, record in records:
        if limit is not None and n >= limit:
            break
        where = f"{source}:{lineno}"
        if prompt_field not in record:
            raise PromptFileError(f"{where}: no field {prompt_field!r} (fields: {sorted(record)})")
        messages = _as_messages(record[prompt_field], system_prompt)
        if messages is not None and split != "all" and split_of(messages, eval_fraction) != split:
            continue  # the other split's prompt: not part of this run's input at all
        n += 1
        if messages is None:
            drops.add(ids.stable_hash("bad-row", source, lineno), "load", "empty_prompt",
                      f"{where}: {_unusable(record[prompt_field])}")
            continue
        pid = ids.prompt_id(messages)
        if pid in first_seen:
            drops.add(pid, "load", "duplicate_prompt", f"{where}: same prompt as line {first_seen[pid]}")
            continue
        first_seen[pid] = lineno
        reference = record.get(reference_field) if reference_field else None
        meta = {k: v for k, v in record.items() if k not in (prompt_field, reference_field)}
        rows.append(dict(prompt_id=pid, source=source, row=lineno, messages=messages,
                         reference=None if reference is None else str(reference),
                         meta=json.dumps(meta, default=str, ensure_ascii=False)))
    return schema.frame(rows, schema.PROMPTS), drops.frame()
