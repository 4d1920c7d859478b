"""The run core under every build (build_pairs, build_step_pairs): planning, shards, accounting, manifest header.

A build is three functions over this core, whatever executes its batches:

    run = plan_run(config, kind, batch_keys)     # load prompts, write prompts.parquet + load_drops.parquet,
                                                 # split the prompts into batches with content-addressed keys
    result = process_batch(run, batch, log)      # the build's own work; its outputs are shards under run.cache_dir
    manifest = finalize(run, results)            # the build's own gathering, then check_accounted + manifest_header

`pipelines/core/executors.py` runs process_batch over run.batches (in this process or as Ray tasks); the Prefect
flows run the same function as Prefect tasks. Resume: shards are written atomically and the last shard a batch
writes marks it done, so a rerun after a crash or kill -9 finds the finished shards and calls no engine for them.
A key hashes the batch's prompts, the config that changes the output and the source code that makes it, so
changing only the scorers re-scores but does not resample. Each run directory records the keys it planned
(`shards.json`, written before any batch runs), so the cache can be listed and collected by the runs that use it
(pipelines/core/shards.py).

Scale: batches are consecutive slices of prompts.parquet (written in row groups of PROMPT_ROW_GROUP rows), so a
batch reads its prompts through `io.RowReader` without reading the other million; tasks get `run.for_tasks()`, the
run without its list of batches (the only part that grows with the number of prompts).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from pipelines.core import io, schema
from pipelines.core.ids import stable_hash
from pipelines.core.progress import to_stderr
from pipelines.core.versions import package_versions

ROOT = Path(__file__).resolve().parents[2]
PROMPT_ROW_GROUP = 1024  # rows per row group of prompts.parquet: a batch decodes at most a few groups


@dataclass
class Batch:
    index: int
    prompt_ids: list[str]
    keys: dict[str, str]  # shard key per shard family ("sample", "score"; "step"): finished work is found by key
    start: int | None = None  # row of its first prompt in prompts.parquet (None: look the ids up)


@dataclass
class Run:
    kind: str             # "pairs" | "step_pairs": the manifest's `kind`
    config: Any           # the build's config, run_id filled in
    run_dir: Path
    cache_dir: Path
    batches: list[Batch]
    started: float = field(default_factory=time.time)
    timings: dict = field(default_factory=dict)
    # the token budget (config.budget.max_total_tokens): each batch's token bound, in batch order; None: no budget
    bounds: list[int] | None = None
    batch_count: int = -1  # len(batches) as planned (kept when for_tasks() leaves the list out)

    def __post_init__(self):
        if self.batch_count < 0:
            self.batch_count = len(self.batches)

    def prompts(self) -> pd.DataFrame:
        return io.read_table(self.run_dir / "prompts.parquet", schema.PROMPTS)

    def batch_prompts(self, batch: Batch) -> pd.DataFrame:
        path = self.run_dir / "prompts.parquet"
        if batch.start is not None:
            rows = io.RowReader(path, schema.PROMPTS).rows(batch.start, batch.start + len(batch.prompt_ids))
            if rows.column("prompt_id").to_pylist() == list(batch.prompt_ids):
                return rows.to_pandas()
        prompts = self.prompts()  # a batch not planned as a slice (or a file rewritten since): by id
        return prompts[prompts["prompt_id"].isin(batch.prompt_ids)]

    def load_drops(self) -> pd.DataFrame:
        return io.read_table(self.run_dir / "load_drops.parquet", schema.DROPS)

    def shard(self, batch: Batch, family: str, name: str | None = None, suffix: str = ".parquet") -> Path:
        """<cache_dir>/<family>/<key>[.<name>]<suffix>: where a batch's output of one kind lives."""
        stem = batch.keys[family] + (f".{name}" if name else "")
        return self.cache_dir / family / f"{stem}{suffix}"

    def resolved(self) -> "Run":
        """The same run with absolute paths: Ray workers may run in another directory or on another node."""
        return dataclasses.replace(self, run_dir=self.run_dir.resolve(), cache_dir=self.cache_dir.resolve())

    def for_tasks(self) -> "Run":
        """What a batch task needs: the run with absolute paths and without the list of batches (each task gets
        its own Batch). At a million prompts the list is ~100 MB, which every task would otherwise carry."""
        return dataclasses.replace(self.resolved(), batches=[], batch_count=self.batch_count)


@dataclass
class BatchResult:
    index: int
    prompts: int
    resumed: bool                                               # its engine work came from the shard cache
    engine_calls: dict[str, int] = field(default_factory=dict)  # by call kind; empty when resumed
    seconds: dict[str, float] = field(default_factory=dict)     # by stage
    stats: dict = field(default_factory=dict)                   # the build's own counters (nodes, tokens, ...)
    node: str = field(default_factory=lambda: current_node())   # where it ran: Ray node id, else host name
    # the policy's tokens of the batch, {"prompt": each prompt once, "generated": every sampled token}; filled
    # for resumed batches too (from their shards), so a budget stops a resumed run where it stopped the first time
    tokens: dict[str, int] = field(default_factory=dict)
    budget_exhausted: bool = False                              # not run: it would pass max_total_tokens

    @property
    def total_tokens(self) -> int:
        return int(sum(self.tokens.values()))


def current_node() -> str:
    """The Ray node id inside a Ray worker or driver, else the host name (for the manifest's batch_nodes)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def code_hash(*paths: str) -> str:
    """Hash of the source under the given paths (folders or files, relative to the repository root): a code
    change invalidates the shards that code made."""
    files = sorted(f for p in paths for f in ((ROOT / p).rglob("*.py") if (ROOT / p).is_dir() else [ROOT / p]))
    return stable_hash([(str(p.relative_to(ROOT)), p.read_bytes().hex()) for p in files])


def default_run_id(config, prefix: str = "") -> str:
    """time + config hash + a random tag: two runs of the same config started in the same second (concurrent
    runs sharing an output_dir) must not share a run directory; resume goes through the shard cache, not the id."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{prefix}{stamp}-{stable_hash(config.model_dump(exclude={'run_id'}), length=6)}-{secrets.token_hex(2)}"


def plan_run(config, kind: str, prompts: pd.DataFrame, drops: pd.DataFrame,
             batch_keys: Callable[[list[str]], dict[str, str]], run_prefix: str = "") -> Run:
    """Write prompts.parquet and the load drops into a new run directory and split the prompts into batches.

    config: a build config with run_id, output_dir and batch_size; prompts, drops: what the loader gave;
    batch_keys(prompt_ids): a batch's shard keys."""
    from pipelines.core import shards
    config = config.model_copy(update={"run_id": config.run_id or default_run_id(config, prefix=run_prefix)})
    run_dir = Path(config.output_dir) / config.run_id
    io.write_table(prompts, run_dir / "prompts.parquet", schema.PROMPTS, row_group_size=PROMPT_ROW_GROUP)
    io.write_table(drops, run_dir / "load_drops.parquet", schema.DROPS)
    batches = plan_batches(prompts["prompt_id"].tolist(), config.batch_size, batch_keys)
    run = Run(kind, config, run_dir, Path(config.output_dir) / ".cache", batches)
    shards.write_plan(run)  # before any batch runs: `flows.cache gc` never collects the shards of a run under way
    return run


def shard_keys(run: Run) -> dict[str, list[str]]:
    """The shard keys of the run's batches, per family, in batch order."""
    keys: dict[str, list[str]] = {}
    for batch in run.batches:
        for family, key in batch.keys.items():
            keys.setdefault(family, []).append(key)
    return keys


def plan_batches(ids: list[str], batch_size: int,
                 batch_keys: Callable[[list[str]], dict[str, str]] = lambda ids: {}) -> list[Batch]:
    """The prompts in batches of batch_size, in order (a dry run plans them without keys); each batch knows the
    row of its first prompt in prompts.parquet."""
    return [Batch(i, ids[start:start + batch_size], batch_keys(ids[start:start + batch_size]), start)
            for i, start in enumerate(range(0, len(ids), batch_size))]


def check_accounted(prompts: pd.DataFrame, *tables: pd.DataFrame) -> None:
    """Every loaded prompt is in one of the tables (pairs, drops). A miss is a bug, not bad input."""
    accounted = set().union(*(set(t["prompt_id"]) for t in tables))
    lost = set(prompts["prompt_id"]) - accounted
    if lost:
        raise RuntimeError(f"{len(lost)} prompts neither paired nor dropped: {sorted(lost)[:5]}")


def drops_by_reason(drops: pd.DataFrame) -> list[dict]:
    return drops.groupby(["stage", "reason"]).size().rename("n").reset_index().to_dict(orient="records")


def summed(dicts: Iterable[dict]) -> dict:
    """Key-wise sum of counters (engine calls or tokens by kind, over batches)."""
    total: dict = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def budget_drops(run: Run, results: list[BatchResult], prompts: pd.DataFrame) -> pd.DataFrame:
    """A `budget_exhausted` drop row for every prompt of a batch the budget stopped: nothing is lost silently."""
    log = schema.DropLog()
    by_id = prompts.set_index("prompt_id")
    limit = run.config.budget.max_total_tokens if run.bounds is not None else None
    for r in results:
        if not r.budget_exhausted:
            continue
        batch = run.batches[r.index]
        for pid in batch.prompt_ids:
            row = by_id.loc[pid]
            log.add(pid, "sample", "budget_exhausted", f"{row['source']}:{row['row']}: not sampled: batch "
                    f"{r.index + 1}/{len(run.batches)} (token bound {run.bounds[r.index]:,}) would pass "
                    f"budget.max_total_tokens {limit:,}")
    return log.frame()


def token_use(results: list[BatchResult]) -> dict:
    """The policy's tokens over the batches that ran, and the generation rate of those computed now."""
    ran = [r for r in results if not r.budget_exhausted]
    use = summed(r.tokens for r in ran)
    use = {"prompt": int(use.get("prompt", 0)), "generated": int(use.get("generated", 0))}
    use["total"] = use["prompt"] + use["generated"]
    computed = [r for r in ran if not r.resumed]
    seconds = sum(sum(r.seconds.get(k, 0.0) for k in ("sample", "search")) for r in computed)
    generated = sum(r.tokens.get("generated", 0) for r in computed)
    use["generated_per_second"] = round(generated / seconds, 2) if seconds > 0 and generated else None
    return use


def budget_summary(run: Run, results: list[BatchResult]) -> dict | None:
    """The manifest's `budget`: the limit, what was spent, and what it stopped (None without a budget)."""
    if run.bounds is None:
        return None
    stopped = [r for r in results if r.budget_exhausted]
    return {"max_total_tokens": run.config.budget.max_total_tokens, "spent": token_use(results)["total"],
            "stopped": bool(stopped), "batches_not_run": len(stopped),
            "prompts_not_sampled": sum(len(run.batches[r.index].prompt_ids) for r in stopped)}


def budget_line(manifest: dict) -> str | None:
    """The summary's line about the budget, when there is one."""
    b = manifest.get("budget")
    if not b:
        return None
    line = f"budget: {b['spent']:,} of {b['max_total_tokens']:,} tokens spent"
    if b["stopped"]:
        line += (f"; stopped before {b['batches_not_run']} of {manifest['batches']['total']} batches: "
                 f"{b['prompts_not_sampled']} prompts not sampled (dropped as budget_exhausted)")
    return line


def manifest_header(run: Run, results: list[BatchResult], prompts: pd.DataFrame, load_drops: pd.DataFrame) -> dict:
    """What every build's manifest starts with: identity, config, versions, prompt counts, batches, calls,
    the policy's token use, and the budget (when there is one)."""
    if sorted(r.index for r in results) != list(range(len(run.batches))):
        raise RuntimeError(f"results for batches {sorted(r.index for r in results)}, expected "
                           f"0..{len(run.batches) - 1}: a batch was neither run nor stopped by the budget")
    header = {
        "run_id": run.config.run_id,
        "run_dir": str(run.run_dir),
        "kind": run.kind,
        "started": dt.datetime.fromtimestamp(run.started).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - run.started, 2),
        "config": run.config.model_dump(),
        "versions": package_versions(),
        "counts": {"prompts_in": len(prompts) + len(load_drops), "prompts_loaded": len(prompts)},
        # total - computed - resumed: batches the budget stopped (the `budget` section says so)
        "batches": {"total": len(run.batches),
                    "computed": sum(1 for r in results if not r.resumed and not r.budget_exhausted),
                    "resumed": sum(1 for r in results if r.resumed)},
        "batch_nodes": summed({r.node: 1} for r in results),  # batches per Ray node id (or host name)
        "shards": {"plan": "shards.json", **{f: len(keys) for f, keys in shard_keys(run).items()}},
        "engine_calls": summed(r.engine_calls for r in results),
        "token_use": token_use(results),
    }
    budget = budget_summary(run, results)
    if budget is not None:
        header["budget"] = budget
    return header


def run_local(build, config, log=to_stderr) -> dict:
    """A whole build without Prefect: build.prepare, the config's executor over the batches, build.finalize.
    `build` is the build's module (pipelines.pairs.build, pipelines.step_pairs.build)."""
    from pipelines.core.executors import run_batches
    run = build.prepare(config)
    return build.finalize(run, run_batches(run, build.process_batch, log=log))
