"""The shard cache's lifecycle (pipelines/core/shards.py): runs record their shard keys when planned; listing says
what the cache holds and who uses it; collecting removes only what no kept run references."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from pipelines.core import run as run_core
from pipelines.core import schema, shards
from pipelines.pairs.config import BuildConfig


def _prompts(ids: list[str]) -> pd.DataFrame:
    return schema.frame([dict(prompt_id=p, source="t", row=i + 1, messages=[{"role": "user", "content": p}])
                         for i, p in enumerate(ids)], schema.PROMPTS)


def _plan(out, run_id: str, ids: list[str]) -> run_core.Run:
    """A run of batches of 2 whose keys depend on the prompts only (so two runs can share a batch)."""
    config = BuildConfig.model_validate({"run_id": run_id, "output_dir": str(out), "batch_size": 2})
    run = run_core.plan_run(config, "pairs", _prompts(ids), schema.empty(schema.DROPS),
                            lambda b: {"sample": "s-" + "-".join(b), "score": "c-" + "-".join(b)})
    for batch in run.batches:  # the files a finished batch leaves
        for path, payload in ((run.shard(batch, "sample", "candidates"), 1000), (run.shard(batch, "sample", "drops"),
                                                                                 10), (run.shard(batch, "score"), 100)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * payload)
    return run


@pytest.fixture
def cache(tmp_path):
    a = _plan(tmp_path, "a", ["p1", "p2", "p3", "p4"])  # batches p1-p2, p3-p4
    b = _plan(tmp_path, "b", ["p3", "p4", "p5", "p6"])  # shares p3-p4 with a
    (tmp_path / "a" / "manifest.json").write_text("{}")
    old = tmp_path / "old"  # a run from before shards.json: it references nothing
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    orphan = tmp_path / ".cache" / "sample" / "s-p9-p10.candidates.parquet"  # its run directory was deleted
    orphan.write_bytes(b"x" * 5000)
    stale = tmp_path / ".cache" / "score" / ".c-p1-p2.parquet.abc123.tmp"  # a write a kill interrupted
    stale.write_bytes(b"x" * 7)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / ".cache" / "score" / ".c-p5-p6.parquet.def456.tmp"  # a write under way
    fresh.write_bytes(b"x" * 3)
    return tmp_path, a, b, orphan, stale, fresh


def test_a_planned_run_records_its_shard_keys(cache):
    out, a, *_ = cache
    plan = json.loads((out / "a" / shards.PLAN).read_text())
    assert plan["kind"] == "pairs" and plan["run_id"] == "a"
    assert plan["families"] == {"sample": ["s-p1-p2", "s-p3-p4"], "score": ["c-p1-p2", "c-p3-p4"]}
    assert [b.start for b in a.batches] == [0, 2]


def test_list_says_what_the_cache_holds_and_who_uses_it(cache):
    out, *_ = cache
    info = shards.list_cache(out)
    assert info["families"]["sample"] == {"files": 7, "bytes": 3 * 1010 + 5000, "keys": 4}
    assert info["families"]["score"] == {"files": 3, "bytes": 300, "keys": 3}
    runs = {r["run_id"]: r for r in info["runs"]}
    assert set(runs) == {"a", "b", "old"}
    assert runs["a"] == {"run_id": "a", "kind": "pairs", "finished": True, "recorded": True, "released": False,
                         "shards_planned": 4, "shards_present": 4, "bytes": 2 * 1110}
    assert runs["b"]["finished"] is False and runs["b"]["bytes"] == 2 * 1110
    assert runs["old"]["recorded"] is False and runs["old"]["shards_planned"] == 0
    assert info["unreferenced"] == {"files": 1, "bytes": 5000}
    assert info["leftovers"] == {"files": 2, "bytes": 10}


def test_collect_removes_only_what_no_kept_run_references(cache):
    out, a, b, orphan, stale, fresh = cache
    dry = shards.collect(out, dry_run=True)
    assert dry["removed_files"] == 2 and orphan.exists() and stale.exists()
    done = shards.collect(out)
    assert done["removed_files"] == 2 and done["removed_bytes"] == 5007 and done["unrecorded_runs"] == ["old"]
    assert not orphan.exists() and not stale.exists() and fresh.exists()  # the young temp file may be a live write
    for run in (a, b):
        assert all(run.shard(bt, "sample", "candidates").exists() for bt in run.batches)


def test_collect_with_keep_releases_the_other_runs_shards(cache):
    out, a, b, *_ = cache
    done = shards.collect(out, keep=["a"])
    assert all(a.shard(bt, "score").exists() for bt in a.batches)  # p3-p4 stays: a uses it too
    assert not b.shard(b.batches[1], "score").exists() and not b.shard(b.batches[1], "sample", "drops").exists()
    assert done["removed_files"] == 3 + 2  # b's own batch (3 files), the orphan and the stale temp file
    with pytest.raises(ValueError, match="no run 'nope'"):
        shards.collect(out, keep=["nope"])


def test_release_removes_this_runs_shards_that_no_other_run_uses(cache):
    out, a, b, orphan, *_ = cache
    done = shards.release(a)
    assert done["removed_files"] == 3  # a's p1-p2 batch; p3-p4 is b's too
    assert not a.shard(a.batches[0], "sample", "candidates").exists()
    assert a.shard(a.batches[1], "sample", "candidates").exists() and orphan.exists()  # nothing else touched
    # a released run protects nothing any more: once b is gone too, a collection takes the shared batch
    assert {r["run_id"]: r["released"] for r in shards.list_cache(out)["runs"]} == {"a": True, "b": False,
                                                                                 "old": False}
    assert shards.collect(out, keep=["a"], dry_run=True)["removed_files"] == 3 + 3 + 1 + 1
