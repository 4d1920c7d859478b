"""Parquet and JSON writing that never leaves a half-written file under the final name.

Write to a temporary file in the same directory, fsync, then os.replace (atomic on POSIX): a reader, or a
resumed run, sees either the complete old file, the complete new file, or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import schema as S


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema) -> Path:
    table = S.to_table(df, schema)
    return _atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_table(path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    return pq.read_table(path, schema=schema).to_pandas()


def write_json(obj, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))
