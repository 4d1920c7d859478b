"""Parquet and JSON writing that never leaves a half-written file under the final name.

Write to a temporary file in the same directory, fsync, then os.replace (atomic on POSIX): a reader, or a
resumed run, sees either the complete old file, the complete new file, or none.

A directory that cannot be created or written (read-only, full, no permission) raises OutputError, one line that
names the path and the reason; the temporary file is removed first, so nothing partial stays under any name. The
CLIs check their output_dir with `check_writable` before a run starts and turn OutputError into exit code 2.
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


class OutputError(OSError):
    """An output path cannot be written; the message names it and says why."""


def _reason(e: OSError) -> str:
    # pyarrow's own text wraps the system's ("Error writing bytes to file. Detail: [errno 28] ..."): use the latter
    return os.strerror(e.errno) if e.errno else (e.strerror or str(e) or type(e).__name__)


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(e.errno, f"cannot write to {path.parent}: {_reason(e)}") from e
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(e.errno, f"cannot write {path}: {_reason(e)}") from e
        raise
    return path


def check_writable(directory: str | Path) -> None:
    """Create `directory` if needed and write (then remove) a small file in it: OutputError if that fails."""
    probe = Path(directory) / ".pairsmith-write-check"
    try:
        _atomic(probe, lambda tmp: Path(tmp).write_bytes(b"ok\n" * 64))
    except OutputError as e:
        raise OutputError(e.errno, f"cannot write to {directory}: {e.strerror.rsplit(': ', 1)[-1]}") from e
    probe.unlink(missing_ok=True)


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema) -> Path:
    table = S.to_table(df, schema)
    return _atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_table(path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    return pq.read_table(path, schema=schema).to_pandas()


def write_json(obj, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))
