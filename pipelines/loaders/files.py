"""Prompt files: JSONL, JSON, Parquet, CSV -> (row number, record) pairs for `records_to_prompts`.

A missing file or a malformed JSONL line is an error naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pandas as pd

from pipelines.loaders.records import PromptFileError


def read_records(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    """Yield (1-based row number, record) from a file."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PromptFileError(f"{path}:{lineno}: malformed JSON at column {e.colno} "
                                          f"({e.msg.removesuffix(' at')})") from None
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

