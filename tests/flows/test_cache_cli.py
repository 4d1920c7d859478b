"""`python -m flows.cache list|gc`: the real command in a subprocess, on a cache with one kept run and one
orphaned shard; bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipelines.core import run as run_core
from pipelines.core import schema
from pipelines.pairs.config import BuildConfig

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cache", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _cache(out: Path) -> Path:
    config = BuildConfig.model_validate({"run_id": "kept", "output_dir": str(out), "batch_size": 1})
    prompts = schema.frame([dict(prompt_id="p1", source="t", row=1, messages=[{"role": "user", "content": "hi"}])],
                           schema.PROMPTS)
    run = run_core.plan_run(config, "pairs", prompts, schema.empty(schema.DROPS), lambda b: {"sample": "k1"})
    kept = run.shard(run.batches[0], "sample", "candidates")
    orphan = kept.with_name("k2.candidates.parquet")
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x" * 2048)
    orphan.write_bytes(b"x" * 4096)
    return orphan


def test_list_then_gc(tmp_path):
    orphan = _cache(tmp_path)
    listed = _cli("list", "--output_dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert "2 files, 6.0 KB" in listed.stdout and "kept  pairs  unfinished  shards 1/1 present  2.0 KB" in \
        listed.stdout and "unreferenced: 1 files, 4.0 KB" in listed.stdout
    info = json.loads(_cli("list", "--output_dir", str(tmp_path), "--json").stdout)
    assert info["unreferenced"] == {"files": 1, "bytes": 4096}
    dry = _cli("gc", "--output_dir", str(tmp_path), "--dry-run")
    assert dry.returncode == 0 and "would remove 1 files (4.0 KB)" in dry.stdout and orphan.exists()
    done = _cli("gc", "--output_dir", str(tmp_path))
    assert done.returncode == 0 and "removed 1 files (4.0 KB)" in done.stdout and not orphan.exists()
    assert json.loads(_cli("list", "--output_dir", str(tmp_path), "--json").stdout)["files"] == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = _cli("list", "--output_dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: output_dir {tmp_path / 'nope'} is not a " \
                                                                  "directory"
    _cache(tmp_path)
    unknown = _cli("gc", "--output_dir", str(tmp_path), "--keep", "ghost")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "no run 'ghost'" in unknown.stderr and "Traceback" not in unknown.stderr
