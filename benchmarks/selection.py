"""Vectorised `select` vs a per-prompt Python loop (RLHFlow style: loop over prompts, argmax, argmin).

    python3 benchmarks/selection.py [n_prompts] [k]       (default 100000 x 10 = 1M scored candidates)

Each side runs in its own subprocess so peak RSS (ru_maxrss) is its own; pairs are asserted identical.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def synthetic_pool(n_prompts: int, k: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    pids = np.char.mod("%016x", rng.integers(0, 2**62, n_prompts)).astype(object)
    cids = np.char.mod("%016x", rng.integers(0, 2**62, n_prompts * k)).astype(object)
    return pd.DataFrame({"prompt_id": np.repeat(pids, k), "candidate_id": cids,
                         "sample_index": np.tile(np.arange(k, dtype=np.int32), n_prompts),
                         "reward": rng.random(n_prompts * k), "error": None})


def loop_max_min(pool: pd.DataFrame) -> list[tuple]:
    groups: dict[str, list] = {}
    for p, c, r in zip(pool["prompt_id"], pool["candidate_id"], pool["reward"]):
        groups.setdefault(p, []).append((c, r))
    out = []
    for p, rows in groups.items():
        rewards = np.array([r for _, r in rows])
        i, j = int(np.argmax(rewards)), int(np.argmin(rewards))
        if rewards[i] - rewards[j] > 1e-12:
            out.append((p, rows[i][0], rows[j][0]))
    return sorted(out)


def run_side(side: str, n_prompts: int, k: int) -> dict:
    pool = synthetic_pool(n_prompts, k)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if side == "loop":
        pairs = loop_max_min(pool)
    else:
        from pipelines.selection import select
        df, _ = select(pool, "max_min")
        pairs = sorted(zip(df["prompt_id"], df["chosen_id"], df["rejected_id"]))
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": dt, "peak_rss_mb": peak / 1024, "pool_rss_mb": base / 1024,
            "pairs_hash": hash(tuple(pairs)), "n_pairs": len(pairs)}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        print(json.dumps(run_side(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        sys.exit(0)
    n, k = (int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), (int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    res = {}
    for side in ("vectorised", "loop"):
        out = subprocess.run([sys.executable, __file__, "--side", side, str(n), str(k)], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["vectorised"]["pairs_hash"] == res["loop"]["pairs_hash"], "pairs differ"
    for side, r in res.items():
        print(f"{side:10s} {r['seconds']:.2f} s  peak RSS {r['peak_rss_mb']:.0f} MB  ({r['n_pairs']} pairs)")
    print(f"max_min, {n} prompts x {k}: vectorised / loop speed ratio = "
          f"{res['loop']['seconds'] / res['vectorised']['seconds']:.2f}x")
