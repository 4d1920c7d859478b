"""Atomic Parquet writes (pipelines.core.io), with real processes: a writer failing or killed mid-write leaves the
final name untouched, and two writers of one key never expose a torn file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core import io, schema
from tests.helpers import ROOT, subprocess_env


def _table(n: int, tag: str) -> pd.DataFrame:
    return schema.drop_rows([f"p{i}" for i in range(n)], "load", "empty_prompt", detail=f"{tag}:" + "x" * 200)


def test_a_writer_failing_mid_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    import pyarrow.parquet

    def half_then_crash(table, where, **kw):
        Path(where).write_bytes(b"PAR1" + b"\0" * 1000)  # a partial Parquet file
        raise OSError("disk full")

    monkeypatch.setattr(pyarrow.parquet, "write_table", half_then_crash)
    target = tmp_path / "t.parquet"
    with pytest.raises(OSError, match="disk full"):
        io.write_table(_table(10, "new"), target, schema.DROPS)
    assert list(tmp_path.iterdir()) == []  # no final file, and the temp file was removed


WRITER = """
import sys
from pipelines.core import io, schema
from tests.helpers import ROOT
rows = int(sys.argv[2])
df = schema.drop_rows([f"p{i}" for i in range(rows)], "load", "empty_prompt", detail=sys.argv[3] + ":" + "x" * 200)
print("writing", flush=True)
for _ in range(int(sys.argv[4])):
    io.write_table(df, sys.argv[1], schema.DROPS)
"""


def _writer(path: Path, rows: int, tag: str, times: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(rows), tag, str(times)], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, text=True)


def test_kill_9_during_a_big_write(tmp_path):
    target = tmp_path / "big.parquet"
    io.write_table(_table(5, "old"), target, schema.DROPS)  # a complete older version is already there
    proc = _writer(target, 400_000, "new", 1)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big.parquet.*.tmp")):  # the writer is inside its temp file
        assert proc.poll() is None, "the writer finished before it could be killed (make the table bigger)"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the final name still holds the complete old file; the partial data is only in the temp file
    old = pd.read_parquet(target)
    assert len(old) == 5 and old["detail"].str.startswith("old:").all()
    assert len(list(tmp_path.glob(".big.parquet.*.tmp"))) == 1


def test_two_writers_of_one_key_never_expose_a_torn_file(tmp_path):
    """Two processes replace the same shard over and over while this one reads it: every read is one writer's
    complete table (mkstemp gives each writer its own temp file; os.replace swaps whole files)."""
    target = tmp_path / "shard.parquet"
    writers = [_writer(target, 3_000, tag, 40) for tag in ("a", "b")]
    seen, reads = set(), 0
    while any(w.poll() is None for w in writers):
        if target.exists():
            df = pd.read_parquet(target)
            assert len(df) == 3_000 and df["detail"].str[:2].nunique() == 1
            seen.add(df["detail"].iloc[0][:1])
            reads += 1
    for w in writers:
        assert w.wait() == 0
    assert reads > 0 and seen <= {"a", "b"}
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*.tmp")) == []
