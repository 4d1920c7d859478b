"""The shard cache of an output_dir (`<output_dir>/.cache/<family>/<key>...`): what is in it, which runs use it,
and collecting the shards no kept run uses.

Every run records the shard keys it planned in `<run_dir>/shards.json` (written by `plan_run` before any batch
runs, so a run under way, or a crashed one waiting to be resumed, protects its shards as a finished one does;
a run that released its shards, `cache.cleanup: true`, is marked so and protects none).
A *kept run* is a run directory under output_dir: delete a run directory to release its shards, or name the
runs to keep (`keep=`). Collecting removes every shard file whose key no kept run lists, and temporary files
left by writes that a kill interrupted. Shards are only ever a cache: a removed one is recomputed by the next run
that needs it.

    list_cache(output_dir)             -> sizes per family, the runs and what they reference, unreferenced bytes
    collect(output_dir, keep=None)     -> removes what no kept run references (dry_run: only says what)
    release(run)                       -> after finalize (`cache.cleanup: true`): this run's shards that no
                                          other run references
Front end: `python -m flows.cache list|gc`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

PLAN = "shards.json"
CACHE = ".cache"


def write_plan(run) -> Path:
    """<run_dir>/shards.json: the run's kind and its shard keys per family, in batch order."""
    from pipelines.core import io
    from pipelines.core.run import shard_keys
    plan = {"run_id": run.config.run_id, "kind": run.kind, "cache_dir": str(run.cache_dir),
            "families": shard_keys(run)}
    return io._atomic(run.run_dir / PLAN, lambda tmp: Path(tmp).write_text(json.dumps(plan) + "\n"))


@dataclass
class ShardFile:
    family: str
    key: str
    path: Path
    bytes: int
    mtime: float


@dataclass
class RunRecord:
    run_id: str
    run_dir: Path
    kind: str | None                                     # None: no shards.json (a run made before it existed)
    keys: dict[str, set[str]] = field(default_factory=dict)
    finished: bool = False                               # manifest.json written
    released: bool = False                               # its finalize released its shards (cache.cleanup)


def shard_files(cache_dir: Path) -> tuple[list[ShardFile], list[ShardFile]]:
    """(shards, leftovers): every file under cache_dir/<family>/, keyed by the name up to its first dot;
    leftovers are the temporary files of atomic writes (`.<name>.<random>.tmp`)."""
    shards, leftovers = [], []
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return shards, leftovers
    for family_dir in sorted(p for p in cache_dir.iterdir() if p.is_dir()):
        for path in family_dir.iterdir():
            if not path.is_file():
                continue
            st = path.stat()
            if path.name.startswith("."):
                leftovers.append(ShardFile(family_dir.name, "", path, st.st_size, st.st_mtime))
            else:
                shards.append(ShardFile(family_dir.name, path.name.split(".")[0], path, st.st_size, st.st_mtime))
    return shards, leftovers


def runs(output_dir: Path) -> list[RunRecord]:
    """The run directories under output_dir (a directory with shards.json, manifest.json or prompts.parquet)."""
    found = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return found
    for run_dir in sorted(p for p in output_dir.iterdir() if p.is_dir() and p.name != CACHE):
        plan, manifest = run_dir / PLAN, run_dir / "manifest.json"
        if plan.exists():
            data = json.loads(plan.read_text())
            keys = {} if data.get("released") else {f: set(k) for f, k in data.get("families", {}).items()}
            found.append(RunRecord(data.get("run_id", run_dir.name), run_dir, data.get("kind"), keys,
                                   manifest.exists(), bool(data.get("released"))))
        elif manifest.exists() or (run_dir / "prompts.parquet").exists():
            found.append(RunRecord(run_dir.name, run_dir, None, {}, manifest.exists()))
    return found


def _referenced(records: list[RunRecord]) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    for r in records:
        for family, keys in r.keys.items():
            refs.setdefault(family, set()).update(keys)
    return refs


def list_cache(output_dir: str | Path) -> dict:
    """What the cache of output_dir holds and who uses it (JSON-ready)."""
    output_dir = Path(output_dir)
    files, leftovers = shard_files(output_dir / CACHE)
    records = runs(output_dir)
    refs = _referenced(records)
    families: dict[str, dict] = {}
    for f in files:
        fam = families.setdefault(f.family, {"files": 0, "bytes": 0, "keys": set()})
        fam["files"] += 1
        fam["bytes"] += f.bytes
        fam["keys"].add(f.key)
    by_key: dict[tuple[str, str], int] = {}
    for f in files:
        by_key[(f.family, f.key)] = by_key.get((f.family, f.key), 0) + f.bytes
    run_rows = []
    for r in records:
        present = [(fam, k) for fam, keys in r.keys.items() for k in keys if (fam, k) in by_key]
        planned = sum(len(k) for k in r.keys.values())
        run_rows.append({"run_id": r.run_id, "kind": r.kind, "finished": r.finished, "recorded": r.kind is not None,
                         "released": r.released, "shards_planned": planned, "shards_present": len(present),
                         "bytes": sum(by_key[p] for p in present)})
    unreferenced = [f for f in files if f.key not in refs.get(f.family, set())]
    return {
        "output_dir": str(output_dir), "cache_dir": str(output_dir / CACHE),
        "files": len(files), "bytes": sum(f.bytes for f in files),
        "families": {k: {"files": v["files"], "bytes": v["bytes"], "keys": len(v["keys"])}
                     for k, v in families.items()},
        "runs": run_rows,
        "unreferenced": {"files": len(unreferenced), "bytes": sum(f.bytes for f in unreferenced)},
        "leftovers": {"files": len(leftovers), "bytes": sum(f.bytes for f in leftovers)},
    }


def collect(output_dir: str | Path, keep: list[str] | None = None, dry_run: bool = False,
            min_age_s: float = 3600.0, only_keys: dict[str, set[str]] | None = None,
            ignore_runs: tuple[str, ...] = ()) -> dict:
    """Remove the shards no kept run references, and leftover temporary files older than min_age_s.

    keep: the run ids that count as kept (default: every run directory under output_dir); an unknown id is an
    error. only_keys: consider only these {family: keys} (release() uses it); ignore_runs: run ids whose
    references do not count. Returns what was (dry_run: would be) removed."""
    output_dir = Path(output_dir)
    records = [r for r in runs(output_dir) if r.run_id not in ignore_runs]
    if keep is not None:
        known = {r.run_id for r in records}
        unknown = sorted(set(keep) - known)
        if unknown:
            raise ValueError(f"no run {unknown[0]!r} under {output_dir} (runs: {sorted(known)[:10]})")
        records = [r for r in records if r.run_id in set(keep)]
    refs = _referenced(records)
    files, leftovers = shard_files(output_dir / CACHE)
    now = time.time()
    doomed = [f for f in files if f.key not in refs.get(f.family, set())
              and (only_keys is None or f.key in only_keys.get(f.family, set()))]
    if only_keys is None:
        doomed += [f for f in leftovers if now - f.mtime >= min_age_s]
    if not dry_run:
        for f in doomed:
            f.path.unlink(missing_ok=True)
    unrecorded = [r.run_id for r in records if r.kind is None]
    return {"removed_files": len(doomed), "removed_bytes": sum(f.bytes for f in doomed), "dry_run": dry_run,
            "kept_runs": len(records), "kept_files": len(files) + len(leftovers) - len(doomed),
            "unrecorded_runs": unrecorded}


def release(run) -> dict:
    """This run's shards that no other run under its output_dir references (`cache.cleanup: true`); its
    shards.json is marked released, so it protects none of them from later collections either."""
    from pipelines.core import io
    from pipelines.core.run import shard_keys
    mine = {f: set(keys) for f, keys in shard_keys(run).items()}
    done = collect(Path(run.config.output_dir), only_keys=mine, ignore_runs=(run.config.run_id,))
    plan = json.loads((run.run_dir / PLAN).read_text())
    plan["released"] = True
    io._atomic(run.run_dir / PLAN, lambda tmp: Path(tmp).write_text(json.dumps(plan) + "\n"))
    return done
