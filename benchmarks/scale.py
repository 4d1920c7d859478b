"""build_pairs' finalize at scale: synthetic shards for N prompts x k responses x C characters (no model), the real
finalize in a fresh child process, its wall time and peak RSS; and what thousands of shards cost elsewhere.

    heavy python benchmarks/scale.py                                   # 10k, 100k and 1M prompts, k=8, 2,000 chars
    heavy python benchmarks/scale.py --prompts 10000 --reference       # + the in-memory finalize of before

Per row (N prompts, batch_size prompts per shard; 200 -> 5,000 shards at 1M):
1. plan: `run_core.plan_run` with build_pairs' shard keys (prompts.parquet, shards.json, one key pair per
   batch), timed in this process; then the shards are written (not timed: that is the engine's work).
2. finalize, in a child process: `pipelines.pairs.build.finalize(run, results)` exactly as a run calls it
   (candidates, scores, pairs, drops, manifest, plots, report.html, dataset card). Peak RSS = the child's VmHWM
   (/proc/self/status), which includes Python, pandas, pyarrow, matplotlib and the Run with its batches; the RSS
   after imports and after loading the Run is printed as the floor. Not ru_maxrss: Linux's exec records the
   high-water mark of the memory it replaces, which for a child started by subprocess (vfork, or fork) is this
   parent's, so the child's ru_maxrss is at least this process's peak so far (1.3 GB at 1M prompts: the planned
   prompts frame and the shard writing), whatever the finalize uses. Both are recorded, and this process's peak.
3. shards, in another child: the local executor's loop over every batch with a batch function that does
   nothing (what run_batches and the progress lines cost per batch), the pickled size of the Run a task gets
   (`run.for_tasks()`) against the whole Run, and a batch's prompt lookup (RowReader over prompts.parquet's row
   groups) against reading prompts.parquet whole; with --ray also 5,000 empty Ray tasks through the Ray executor.
--finalize-env NAME=VALUE (repeatable): an A/B of the finalize child with and without that environment (e.g. an
allocator switch read at import), interleaved, --finalize-repeats runs each, the outputs' bytes asserted equal.
--reference: the finalize this project had before this benchmark (gather every shard into pandas, select once,
write the four tables; no reports), in its own child, for rows up to --reference-max prompts (it needs ~35-60 KB
of RAM per prompt).

Synthetic data: each response is a 2,000-character slice at a random offset of a fixed 32 MB text of words drawn
from a 5,000-word vocabulary (Zipf weights), so texts are distinct and compress like prose (~2.5x with Parquet's
snappy); rewards are a 0/1 score (p = 0.3) + 0.1 x a uniform one, the default reward's shape, and 0.1% of the
candidates carry a scorer error. Selection: build_pairs' default (`verified`, 2 pairs per prompt, no filters).
Shards and run directories go to --workdir and are deleted after each row (--keep leaves them).
Results: benchmarks/results/scale.json (command, machine, load average before and after each row, figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM = "Answer the question. Show a short calculation, then state the final number."


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ru_maxrss_mb() -> float:
    """The process's ru_maxrss; in a child, at least the parent's peak at the fork (see the module doc)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def text_pool(size: int = 32 << 20, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    vocab = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(2, 10, 5_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    words = rng.choice(len(vocab), size=size // 6, p=weights / weights.sum())
    return " ".join(vocab[w] for w in words)[:size]


def prompts_frame(n: int, seed: int):
    import pandas as pd
    rng = np.random.default_rng(seed)
    ids = np.char.mod("%016x", rng.integers(0, 2**62, n, dtype=np.int64)).astype(object)
    a, b = rng.integers(1, 1000, n), rng.integers(1, 1000, n)
    messages = [[{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": f"A farmer has {x} apples and buys {y} more. How many apples now?"}]
                for x, y in zip(a.tolist(), b.tolist())]
    return pd.DataFrame({"prompt_id": ids, "source": "synthetic", "row": np.arange(1, n + 1), "messages": messages,
                         "reference": (a + b).astype(str).astype(object), "meta": "{}"})


def plan(workdir: Path, n: int, k: int, chars: int, batch_size: int):
    """The run, planned as build_pairs plans it (timed)."""
    from pipelines.core import run as run_core
    from pipelines.core import schema
    from pipelines.pairs import build
    from pipelines.pairs.config import BuildConfig
    config = BuildConfig.model_validate({
        "run_id": f"scale-{n}", "output_dir": str(workdir / "runs"), "batch_size": batch_size,
        "sampler": {"k": k, "max_new_tokens": max(1, chars // 4)}, "prompts": {"limit": None}})
    prompts = prompts_frame(n, seed=n)
    t0 = time.perf_counter()
    run = run_core.plan_run(config, "pairs", prompts, schema.empty(schema.DROPS), build.batch_keys(config))
    return run, time.perf_counter() - t0


def write_shards(run, k: int, chars: int, seed: int = 0) -> dict:
    """Every batch's candidates, scores and (empty) sample drops, as process_batch leaves them."""
    from pipelines.core import schema
    pool = text_pool()
    rng = np.random.default_rng(seed)
    t0, sizes = time.perf_counter(), {"sample": 0, "score": 0}
    for batch in run.batches:
        m = len(batch.prompt_ids) * k
        pids = np.repeat(np.asarray(batch.prompt_ids, dtype=object), k)
        cids = np.char.mod("%016x", rng.integers(0, 2**62, m, dtype=np.int64)).astype(object)
        offsets = rng.integers(0, len(pool) - chars, m)
        tokens = rng.integers(chars // 6, chars // 3, m).astype(np.int32)
        candidates = pa.table({
            "candidate_id": cids, "prompt_id": pids, "sample_index": np.tile(np.arange(k, dtype=np.int32), m // k),
            "text": [pool[o:o + chars] for o in offsets.tolist()], "finish_reason": ["stop"] * m,
            "prompt_tokens": np.full(m, 40, np.int32), "completion_tokens": tokens,
            "logprob_sum": -rng.random(m) * tokens, "sampler": ["transformers"] * m, "model": ["bench-model"] * m,
            "seed": rng.integers(0, 2**31 - 1, m)}, schema=schema.CANDIDATES)
        correct = (rng.random(m) < 0.3).astype(np.float64)
        error = np.where(rng.random(m) < 0.001, "timeout", None).astype(object)
        scores = pa.table({
            "candidate_id": np.concatenate([cids, cids]), "prompt_id": np.concatenate([pids, pids]),
            "scorer": ["math_verify"] * m + ["confidence"] * m,
            "score": np.concatenate([np.where(error == None, correct, np.nan), rng.random(m)]),  # noqa: E711
            "details": [json.dumps({"parsed": str(int(c * 42)), "gold": "42"}) for c in correct.tolist()] + ["{}"] * m,
            "error": np.concatenate([error, np.full(m, None, dtype=object)])}, schema=schema.SCORES)
        paths = run.shard(batch, "sample", "drops"), run.shard(batch, "score"), run.shard(batch, "sample",
                                                                                          "candidates")
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.DROPS.empty_table(), paths[0])
        pq.write_table(scores, paths[1])
        pq.write_table(candidates, paths[2])
        sizes["sample"] += paths[2].stat().st_size
        sizes["score"] += paths[1].stat().st_size
    return {"write_s": time.perf_counter() - t0, "shard_bytes": sizes}


def results_of(run):
    from pipelines.core.run import BatchResult
    return [BatchResult(b.index, len(b.prompt_ids), True) for b in run.batches]


def child_finalize(run_path: Path) -> dict:
    import pipelines.pairs.finalize  # noqa: F401  (imports before the floor reading)
    import pipelines.pairs.selection.verified  # noqa: F401  (the default rule)
    from pipelines.pairs import build
    floor_imports = rss_mb()
    run = pickle.loads(run_path.read_bytes())
    results = results_of(run)
    floor = rss_mb()
    t0 = time.perf_counter()
    manifest = build.finalize(run, results)
    wall = time.perf_counter() - t0
    files = {n: (run.run_dir / f"{n}.parquet").stat().st_size for n in ("candidates", "scores", "pairs", "drops")}
    peak, ru_peak = rss_mb("VmHWM"), ru_maxrss_mb()
    # after the peak reading: the A/B (--finalize-env) asserts its sides wrote the same bytes
    digests = {n: hashlib.sha256((run.run_dir / f"{n}.parquet").read_bytes()).hexdigest() for n in ("pairs", "drops")}
    return {"sha256": digests, "finalize_s": wall, "peak_rss_mb": peak, "ru_maxrss_mb": ru_peak,
            "rss_after_imports_mb": floor_imports, "rss_with_run_mb": floor, "timings": manifest["timings"],
            "pairs": manifest["counts"]["pairs"], "candidates": manifest["counts"]["candidates"],
            "drop_rows": sum(d["n"] for d in manifest["counts"]["drops_by_reason"]), "output_bytes": files}


def child_reference(run_path: Path) -> dict:
    """The in-memory finalize of before (finalize.in_memory_tables, then the four tables written; no reports)."""
    from pipelines.core import io, schema
    from pipelines.pairs.finalize import in_memory_tables
    run = pickle.loads(run_path.read_bytes())
    floor = rss_mb()
    t0 = time.perf_counter()
    tables = in_memory_tables(run)
    for name, df in tables.items():
        io.write_table(df, run.run_dir / "reference" / f"{name}.parquet", schema.TABLES[name])
    return {"finalize_s": time.perf_counter() - t0, "rss_with_run_mb": floor, "pairs": len(tables["pairs"]),
            "peak_rss_mb": rss_mb("VmHWM"), "ru_maxrss_mb": ru_maxrss_mb()}


def _noop_batch(run, batch, log=print):
    from pipelines.core.run import BatchResult
    return BatchResult(batch.index, len(batch.prompt_ids), True)


def child_shards(run_path: Path, with_ray: bool) -> dict:
    import dataclasses

    from pipelines.core.executors import run_batches
    run = pickle.loads(run_path.read_bytes())
    lines: list[str] = []
    t0 = time.perf_counter()
    run_batches(run, _noop_batch, log=lines.append)
    local_s = time.perf_counter() - t0
    last = run.batches[-1]
    t0 = time.perf_counter()
    rows = run.batch_prompts(last)
    lookup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = run.prompts()
    whole_s = time.perf_counter() - t0
    assert list(rows["prompt_id"]) == last.prompt_ids and len(whole) == sum(len(b.prompt_ids) for b in run.batches)
    out = {"batches": len(run.batches), "local_loop_s": local_s, "progress_lines": len(lines),
           "task_run_bytes": len(pickle.dumps(run.for_tasks())), "whole_run_bytes": len(pickle.dumps(run)),
           "batch_prompt_lookup_s": lookup_s, "read_all_prompts_s": whole_s}
    if with_ray:
        from pipelines.core.config import ExecutorConfig
        ray_run = dataclasses.replace(run, config=run.config.model_copy(update={"executor": ExecutorConfig(
            name="ray", init_kwargs={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False})}))
        t0 = time.perf_counter()
        results = run_batches(ray_run, _noop_batch, log=lambda m: None)
        out["ray_loop_s"] = time.perf_counter() - t0  # includes ray.init and shutdown (~5 s)
        assert [r.index for r in results] == list(range(len(run.batches)))
    return out


def in_child(kind: str, run_path: Path, extra: list[str] = (), env_extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env_extra or {}))
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(run_path), *extra], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def finalize_ab(run_path: Path, env: dict, repeats: int, first: dict) -> dict:
    """The finalize child with and without `env`, interleaved (plain, env, plain, env, ...; the row's first plain
    finalize counts as the first plain run): wall time, select time and peak RSS of each, identical outputs."""
    runs = {"plain": [first], "with_env": []}
    for i in range(repeats):
        if i:
            runs["plain"].append(in_child("finalize", run_path))
        runs["with_env"].append(in_child("finalize", run_path, env_extra=env))
    outputs = {json.dumps([r["pairs"], r["drop_rows"], r["candidates"], r["sha256"]])
               for rs in runs.values() for r in rs}
    assert len(outputs) == 1, f"finalize outputs differ with {env}: {outputs}"
    out = {"environment": env, "repeats": repeats}
    for side, rs in runs.items():
        out[side] = {"finalize_s": [round(r["finalize_s"], 3) for r in rs],
                     "select_s": [r["timings"]["select_s"] for r in rs],
                     "write_s": [r["timings"]["write_s"] for r in rs],
                     "peak_rss_mb": [round(r["peak_rss_mb"]) for r in rs]}
    best = {side: min(v["finalize_s"]) for side, v in ((s, out[s]) for s in runs)}
    out["with_env_vs_plain_best"] = round(best["with_env"] / best["plain"], 4)
    print(f"          finalize A/B {env}: best {best['plain']:.2f} s plain vs {best['with_env']:.2f} s with it "
          f"({out['with_env_vs_plain_best']:.3f}x); select {min(out['plain']['select_s']):.3f} vs "
          f"{min(out['with_env']['select_s']):.3f} s; peak RSS {max(out['plain']['peak_rss_mb'])} vs "
          f"{max(out['with_env']['peak_rss_mb'])} MB", flush=True)
    return out


def machine() -> dict:
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    import pandas as pd
    return {"cpus": os.cpu_count(), "ram_gb": round(mem / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(), "pyarrow": pa.__version__, "pandas": pd.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default="10000,100000,1000000")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--workdir", default="/tmp/pairsmith-scale")
    ap.add_argument("--reference", action="store_true", help="also the in-memory finalize of before")
    ap.add_argument("--reference-max", type=int, default=10_000, help="... for rows of at most this many prompts")
    ap.add_argument("--ray", action="store_true", help="also empty tasks through the Ray executor")
    ap.add_argument("--keep", action="store_true", help="keep the shards and run directories")
    ap.add_argument("--finalize-env", action="append", default=[], metavar="NAME=VALUE",
                    help="A/B: also run the finalize child with this in its environment (repeatable), interleaved "
                         "with the plain one, --finalize-repeats times each (e.g. MIMALLOC_ALLOW_THP=0)")
    ap.add_argument("--finalize-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "RUN"), help=argparse.SUPPRESS)
    ap.add_argument("--child-ray", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, run_path = args.child[0], Path(args.child[1])
        fn = {"finalize": child_finalize, "reference": child_reference}.get(kind)
        print(json.dumps(fn(run_path) if fn else child_shards(run_path, args.child_ray)))
        return

    rows = []
    for n in [int(x) for x in args.prompts.split(",")]:
        workdir = Path(args.workdir) / f"n{n}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        load_before = os.getloadavg()
        run, plan_s = plan(workdir, n, args.k, args.chars, args.batch_size)
        data = write_shards(run, args.k, args.chars)
        run_path = workdir / "run.pkl"
        run_path.write_bytes(pickle.dumps(run))
        row = {"prompts": n, "k": args.k, "chars": args.chars, "batch_size": args.batch_size,
               "shards": len(run.batches), "text_gb": n * args.k * args.chars / 1e9, "plan_s": plan_s, **data,
               "benchmark_peak_rss_mb": rss_mb("VmHWM"), "load_before": [round(x, 2) for x in load_before]}
        del run
        row["finalize"] = in_child("finalize", run_path)
        if args.finalize_env:
            row["finalize_ab"] = finalize_ab(run_path, dict(kv.split("=", 1) for kv in args.finalize_env),
                                             args.finalize_repeats, row["finalize"])
        row["many_shards"] = in_child("shards", run_path, ["--child-ray"] if args.ray else [])
        if args.reference and n <= args.reference_max:
            row["reference"] = in_child("reference", run_path)
        row["load_after"] = [round(x, 2) for x in os.getloadavg()]
        rows.append(row)
        f = row["finalize"]
        print(f"{n:>9,} prompts x {args.k} x {args.chars} chars ({row['text_gb']:.2f} GB text, {row['shards']} "
              f"shards): finalize {f['finalize_s']:.1f} s, peak RSS {f['peak_rss_mb']:.0f} MB (floor "
              f"{f['rss_with_run_mb']:.0f} MB); plan {plan_s:.2f} s; load {row['load_before'][0]:.1f} -> "
              f"{row['load_after'][0]:.1f}", flush=True)
        if "reference" in row:
            r = row["reference"]
            print(f"          in-memory finalize of before: {r['finalize_s']:.1f} s, peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB", flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {}
    by_n = {r["prompts"]: r for r in rows}
    if len(rows) >= 2:
        small, big = rows[-2], rows[-1]
        summary = {
            f"peak_rss_ratio_{big['prompts']}_vs_{small['prompts']}":
                big["finalize"]["peak_rss_mb"] / small["finalize"]["peak_rss_mb"],
            "seconds_per_million_prompts": {n: r["finalize"]["finalize_s"] / n * 1e6 for n, r in by_n.items()}}
        print(json.dumps(summary, indent=1))
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
