"""Resume and integrity, with real processes: kill -9 in the middle of sampling and rerun; atomic Parquet writes;
concurrent runs sharing one output_dir (and so one shard cache).

The runs are the real CLI (`python -m flows.build_pairs --no-prefect`) on the embedded model, tiny settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.core import io, schema
from tests.helpers import ROOT

TINY_ARGS = ["--prompts.limit", "6", "--batch_size", "2", "--sampler.k", "2", "--sampler.max_new_tokens", "8"]
BATCHES = 3


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))  # the code under test, not an installed copy
    # every run on one thread: the same float summation order in all of them (and no OpenMP spinning on a shared
    # machine)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _cli(out: Path, run_id: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.build_pairs", "--no-prefect", "--output_dir", str(out), "--run_id", run_id,
           *TINY_ARGS, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / run_id / "manifest.json").read_text())


def _shards(out: Path) -> list[Path]:
    return sorted((out / ".cache" / "sample").glob("*.candidates.parquet"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, smollm_dir) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    _finish(_cli(out, "whole"))
    manifest = _manifest(out, "whole")
    assert manifest["engine_calls"] == {"sample": BATCHES}
    return manifest


@pytest.mark.timeout(1800)  # model loads in 3 processes; slow when the 2 cores are shared
def test_kill_9_in_the_middle_of_sampling_then_rerun(tmp_path, uninterrupted):
    out = tmp_path / "runs"
    proc = _cli(out, "crashy")
    deadline = time.monotonic() + 600
    while not _shards(out):  # the first batch's candidates shard marks it finished
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "no batch finished in 600 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(_shards(out))
    assert 1 <= finished < BATCHES, f"{finished} of {BATCHES} batches finished before the kill: nothing to resume"
    assert not (out / "crashy" / "manifest.json").exists() and not (out / "crashy" / "pairs.parquet").exists()

    _finish(_cli(out, "crashy"))  # the same command again
    manifest = _manifest(out, "crashy")
    assert manifest["batches"] == {"total": BATCHES, "computed": BATCHES - finished, "resumed": finished}
    assert manifest["engine_calls"].get("sample", 0) == BATCHES - finished  # no finished batch was sampled again
    assert len(_shards(out)) == BATCHES
    # the same files as a run that was never interrupted (same seeds, another output dir and run id)
    for name in ("pairs", "candidates", "scores", "drops"):
        a = pd.read_parquet(Path(uninterrupted["run_dir"]) / f"{name}.parquet")
        b = pd.read_parquet(out / "crashy" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b)
    assert manifest["counts"] == uninterrupted["counts"]


@pytest.mark.timeout(1800)
def test_concurrent_runs_share_the_cache_without_interfering(tmp_path, uninterrupted):
    out = tmp_path / "runs"
    # same config, different run ids, started together: they sample the same batches at the same time and both
    # write every shard key (two writers of one file)
    procs = {rid: _cli(out, rid) for rid in ("left", "right")}
    for proc in procs.values():
        _finish(proc)
    left, right = _manifest(out, "left"), _manifest(out, "right")
    for m in (left, right):
        assert m["counts"] == uninterrupted["counts"] and m["batches"]["total"] == BATCHES
        assert m["engine_calls"].get("sample", 0) == m["batches"]["computed"] <= BATCHES
    assert left["engine_calls"].get("sample", 0) + right["engine_calls"].get("sample", 0) >= BATCHES  # every batch was sampled at least once
    for name in ("pairs", "candidates", "scores", "drops"):
        ref = pd.read_parquet(Path(uninterrupted["run_dir"]) / f"{name}.parquet")
        for rid in procs:
            pd.testing.assert_frame_equal(ref, pd.read_parquet(out / rid / f"{name}.parquet"))
    # the shared cache: every shard complete and readable, no temp file left behind by either writer
    cache = out / ".cache"
    assert len(_shards(out)) == BATCHES and len(list((cache / "score").glob("*.parquet"))) == BATCHES
    for shard in cache.rglob("*.parquet"):
        pq.read_table(shard)
    assert list(cache.rglob("*.tmp")) == []


# --- atomic writes -----------------------------------------------------------------------------------------------

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
                            env=_env(), stdout=subprocess.PIPE, text=True)


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
