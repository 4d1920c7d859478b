"""Parquet and JSON writing that never leaves a half-written file under the final name, and the readers that go
with it.

Write to a temporary file in the same directory, fsync, then os.replace (atomic on POSIX): a reader, or a
resumed run, sees either the complete old file, the complete new file, or none. `ParquetSink` does the same for a
file written piece by piece (a run's outputs streamed shard by shard); `RowReader` reads a row range through the
file's row groups (a batch's prompts out of a million) without reading the rest.

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


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema, row_group_size: int | None = None) -> Path:
    table = S.to_table(df, schema)
    return _atomic(Path(path), lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size))


def read_table(path: str | Path, schema: pa.Schema, columns: list[str] | None = None) -> pd.DataFrame:
    return read_arrow(path, schema, columns).to_pandas()


def read_arrow(path: str | Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """The file as an arrow table with `schema`'s types (columns: only these)."""
    return pq.read_table(path, schema=schema, columns=columns)


class ParquetSink:
    """One Parquet file written piece by piece (tables or frames of one schema), atomically: the pieces go to a
    temporary file that replaces `path` on close(); an error (or abort()) leaves no file under `path`.

    Pieces are buffered up to `row_group_bytes` and written as one row group, so many small shards do not make
    thousands of tiny row groups, and memory holds at most one row group."""

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_bytes: int = 64 << 20):
        self.path, self.schema, self.row_group_bytes = Path(path), schema, row_group_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self.rows = 0

    def write(self, piece: pa.Table | pd.DataFrame) -> None:
        table = piece if isinstance(piece, pa.Table) else S.to_table(piece, self.schema)
        if not table.schema.equals(self.schema):
            table = table.select(self.schema.names).cast(self.schema)
        if not table.num_rows:
            return
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
            self._pending, self._pending_bytes = [], 0

    def close(self) -> Path:
        self._flush()
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._pending = []
        try:
            self._writer.close()
        finally:
            Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> "ParquetSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class RowReader:
    """Rows [start, stop) of a Parquet file, read through its row groups (only the groups that hold them). The
    last group read is kept, so reading consecutive ranges in order decodes each group once."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.schema = schema
        self._file = pq.ParquetFile(path)
        sizes = [self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)]
        self._starts = [0]
        for n in sizes:
            self._starts.append(self._starts[-1] + n)
        self._cached: tuple[int, pa.Table] | None = None

    @property
    def num_rows(self) -> int:
        return self._starts[-1]

    def _group(self, i: int) -> pa.Table:
        if self._cached is None or self._cached[0] != i:
            self._cached = None  # released before the next group is decoded: one group in memory, not two
            self._cached = (i, self._file.read_row_group(i).select(self.schema.names).cast(self.schema))
        return self._cached[1]

    def rows(self, start: int, stop: int) -> pa.Table:
        import bisect
        stop = min(stop, self.num_rows)
        if start >= stop:
            return self.schema.empty_table()
        first = bisect.bisect_right(self._starts, start) - 1
        parts, at = [], first
        while at < len(self._starts) - 1 and self._starts[at] < stop:
            lo, hi = max(start, self._starts[at]) - self._starts[at], min(stop, self._starts[at + 1]) - self._starts[at]
            parts.append(self._group(at).slice(lo, hi - lo))
            at += 1
        return pa.concat_tables(parts)


def read_rows_in(path: str | Path, key: str, values, columns: list[str] | None = None) -> pa.Table:
    """The rows of a Parquet file whose `key` column is in `values` (the file's own types; columns: only these),
    one row group at a time: the key column of each group, then the other columns of the groups that hold a match.

    For a few rows of a large file (the report's 30 pairs' candidates out of 8M): `pq.read_table(filters=...)`
    decodes every row group of every column asked for, several at once (measured: 2.6 GB of RSS for 240 rows of
    a 100k-prompt run's candidates.parquet, growing with the file), this holds one group."""
    import pyarrow.compute as pc
    file = pq.ParquetFile(path)
    names = columns or file.schema_arrow.names
    value_set = pa.array(list(values), type=file.schema_arrow.field(key).type)
    parts = []
    for i in range(file.num_row_groups):
        keep = pc.is_in(file.read_row_group(i, columns=[key]).column(key), value_set=value_set)
        if pc.any(keep).as_py():
            parts.append(file.read_row_group(i, columns=names).filter(keep))
    return pa.concat_tables(parts) if parts else file.schema_arrow.empty_table().select(names)


def write_json(obj, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))
