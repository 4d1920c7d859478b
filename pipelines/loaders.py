"""Prompt loaders: a file (JSONL, JSON, Parquet, CSV) to the PROMPTS table, plus drop rows.

Rules (each has a test):
- a missing file, a malformed JSONL line or a missing prompt column is an error naming the file (and line);
- an empty or non-string prompt, and a prompt that repeats an earlier one, becomes a drop row whose detail
  names the file and line: nothing is skipped silently.
A prompt field may also hold a message list ([{"role": ..., "content": ...}, ...]) instead of plain text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from pipelines import schema

# Special formats (a dataset inside a pip package, ...): format name -> "module:function", imported lazily.
# The function takes the PromptsConfig and returns (prompts, drops) like load_prompts.
LOADERS: dict[str, str] = {
    "humaneval": "pipelines.humaneval:load_humaneval",
    "mtbench": "pipelines.mtbench:load_mtbench",
}
FILE_FORMATS = {"auto", "jsonl", "json", "parquet", "csv"}


class PromptFileError(ValueError):
    """Bad input that makes the whole file unusable (as opposed to one bad row, which becomes a drop)."""


def _records(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    """Yield (1-based row number, record) from a file."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PromptFileError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise PromptFileError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record
    elif fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise PromptFileError(f"{path}: expected a JSON list of objects")
        for i, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                raise PromptFileError(f"{path}: item {i} is not an object")
            yield i, record
    elif fmt in ("parquet", "csv"):
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, keep_default_na=False)
        for i, record in enumerate(df.to_dict(orient="records"), start=1):
            yield i, record
    else:
        raise PromptFileError(f"{path}: unknown format {fmt!r}")


def _detect(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix, "jsonl")


def _as_messages(value: Any, system: str | None) -> list[dict] | None:
    """Plain text or a message list to messages; None when the value is not a usable prompt."""
    if isinstance(value, str):
        return schema.user_messages(value, system) if value.strip() else None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        value = value.tolist()
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        if not any(m["content"].strip() for m in value):
            return None
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}] + messages
        return messages
    return None


def split_of(messages: list[dict], eval_fraction: float) -> str:
    """"train" or "eval": a hash of the conversation without its system message, so the split of a prompt does
    not depend on the system prompt, the file order, the limit or the machine. The same fraction always gives
    the same split; train and eval never share a prompt (a repeated prompt lands in the same split)."""
    key = schema.stable_hash("split", [(m["role"], m["content"]) for m in messages if m["role"] != "system"])
    return "eval" if int(key, 16) % 1_000_000 < eval_fraction * 1_000_000 else "train"


def records_to_prompts(records: Iterator[tuple[int, dict]], source: str, prompt_field: str,
                       reference_field: str | None, system_prompt: str | None,
                       limit: int | None = None, split: str = "all",
                       eval_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, drops, first_seen = [], [], {}
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
            value = record[prompt_field]
            drops.append(dict(prompt_id=schema.stable_hash("bad-row", source, lineno), stage="load",
                              reason="empty_prompt",
                              detail=f"{where}: prompt is {'empty' if value in ('', None) else type(value).__name__}"
                                     f" ({str(value)[:60]!r})"))
            continue
        pid = schema.prompt_id(messages)
        if pid in first_seen:
            drops.append(dict(prompt_id=pid, stage="load", reason="duplicate_prompt",
                              detail=f"{where}: same prompt as line {first_seen[pid]}"))
            continue
        first_seen[pid] = lineno
        reference = record.get(reference_field) if reference_field else None
        meta = {k: v for k, v in record.items() if k not in (prompt_field, reference_field)}
        rows.append(dict(prompt_id=pid, source=source, row=lineno, messages=messages,
                         reference=None if reference is None else str(reference),
                         meta=json.dumps(meta, default=str, ensure_ascii=False)))
    return schema.frame(rows, schema.PROMPTS), schema.frame(drops, schema.DROPS)


def load_prompts(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PromptsConfig -> (prompts, drops)."""
    split, fraction = getattr(cfg, "split", "all"), getattr(cfg, "eval_fraction", 0.2)
    if cfg.format in LOADERS:
        import importlib
        module, attr = LOADERS[cfg.format].split(":")
        loader = getattr(importlib.import_module(module), attr)
        if split == "all":
            return loader(cfg)
        # split first, then the limit: the first N prompts *of the split*
        prompts, drops = loader(cfg.model_copy(update={"limit": None}))
        keep = [split_of(list(m), fraction) == split for m in prompts["messages"]]
        prompts = prompts[keep].head(cfg.limit).reset_index(drop=True) if cfg.limit else \
            prompts[keep].reset_index(drop=True)
        return prompts, drops[drops["prompt_id"].isin(prompts["prompt_id"])].reset_index(drop=True)
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    fmt = _detect(path) if cfg.format == "auto" else cfg.format
    return records_to_prompts(_records(path, fmt), str(path), cfg.prompt_field, cfg.reference_field,
                              cfg.system_prompt, cfg.limit, split, fraction)
