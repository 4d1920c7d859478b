"""Vectorised `select` vs a per-prompt Python loop (RLHFlow style: loop over prompts, argmax, argmin).

    python benchmarks/selection.py [--prompts 100000] [--k 10] [--repeats 3] [--rules max_min,mu_2sigma,verified]
    python benchmarks/selection.py --thp off       # both sides without transparent huge pages (see below)

Sides, each in its own subprocess (so peak RSS, ru_maxrss, is its own), timed on the selection only:
- vectorised: `pipelines.pairs.selection.select(pool, rule)`: pairs AND every drop row (the not_selected rows of the
  k-2 unused candidates of each prompt: 800k rows at 1M candidates), the details on a helper thread;
- select-1-thread: the same with the details formatted inline (one core);
- loop: what RLHFlow's script does: group rows by prompt, argmax/argmin per prompt, pairs only (verified, the
  default rule: correct sorted best first, incorrect worst first, 2 pairs in rounds, on a pool of 0/1 scores
  + 0.1 x a uniform reward);
- loop+drops: the same loop also writing the drop rows select writes (same reasons and detail text), as a frame.
Pairs are asserted identical across the three sides, and select's drop rows identical to loop+drops' (prompt,
candidate, reason, detail text). Each side's process times two calls: the first (what a build pays: one select
per run) and a second on a deep copy of the pool (what later calls in the same process pay, e.g. one per shard;
on this VM fresh pages and a fuller heap make either one the slower depending on the machine's state). The CPU
time of the first call is recorded too: the vectorised side uses a second core for the drop details.
Best (and median) of --repeats runs per side, interleaved; the ratios are of runs in this one invocation.
--thp off: every side's process turns transparent huge pages off for itself (prctl PR_SET_THP_DISABLE) before it
builds the pool, so every side faults 4 KB pages. On a VM whose balloon reports free pages to the host (the JSON's
machine.free_page_reporting), a 2 MB page made of memory freed a few seconds earlier costs a host fault, 8-13x the
time of a reused one: select's first call (arrow's and numpy's large buffers are huge pages) then pays 0.02-0.3 s
by when the pages it gets were freed, which the loop (4 KB pymalloc arenas) does not. The default keeps the
kernel's behaviour: what a user gets.
Results: benchmarks/results/selection.json, selection-thp-off.json (command, machine, load average, figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import record  # noqa: E402

EPS = 1e-12


VERIFIED_CAP = 2  # build_pairs' default max_pairs_per_prompt for verified
RULE_PARAMS = {"verified": {"max_pairs_per_prompt": VERIFIED_CAP}}
CORRECT = "score_math_verify"


def synthetic_pool(n_prompts: int, k: int, rule: str = "max_min") -> pd.DataFrame:
    """Uniform rewards; for verified, the default reward's shape instead: a 0/1 verifier score (p = 0.3) + 0.1 x a
    uniform one, and the score column the rule reads."""
    rng = np.random.default_rng(0)
    pids = np.char.mod("%016x", rng.integers(0, 2**62, n_prompts)).astype(object)
    cids = np.char.mod("%016x", rng.integers(0, 2**62, n_prompts * k)).astype(object)
    pool = pd.DataFrame({"prompt_id": np.repeat(pids, k), "candidate_id": cids,
                         "sample_index": np.tile(np.arange(k, dtype=np.int32), n_prompts),
                         "reward": rng.random(n_prompts * k), "error": None})
    if rule == "verified":
        score = (np.random.default_rng(1).random(len(pool)) < 0.3).astype(np.float64)
        pool[CORRECT] = score
        pool["reward"] = score + 0.1 * pool["reward"]
    return pool


def pick(rule: str, rewards: np.ndarray) -> tuple[int, int]:
    """chosen, rejected index inside one prompt (rows in sample_index order: argmax/argmin take the lowest)."""
    i = int(np.argmax(rewards))
    if rule == "max_min":
        return i, int(np.argmin(rewards))
    d = np.abs(rewards - (rewards.mean() - 2 * rewards.std()))
    d[i] = np.inf  # rejected is one of the other responses
    return i, int(np.argmin(d))


def loop_verified(pool: pd.DataFrame, with_drops: bool):
    """verified per prompt: correct (score >= 1) best first, incorrect worst first (ties by sample_index, the row
    order here), pairs in rounds up to the cap: pair t is correct t % a vs incorrect (t % a + t // a) % b."""
    groups: dict[str, list] = {}
    for p, c, r, s in zip(pool["prompt_id"], pool["candidate_id"], pool["reward"], pool[CORRECT]):
        groups.setdefault(p, []).append((c, r, s >= 1.0))
    pairs, drops = [], []
    for p, rows in groups.items():
        good = sorted((x for x in rows if x[2]), key=lambda x: -x[1])  # sorted is stable: ties keep row order
        bad = sorted((x for x in rows if not x[2]), key=lambda x: x[1])
        if not good or not bad:
            if with_drops:
                drops.append((p, None, "select", "verified", "no_incorrect" if good else "no_correct",
                              f"{'all' if good else '0 of'} {len(rows)} valid responses have {CORRECT} >= 1"))
            continue
        used = set()
        for t in range(min(VERIFIED_CAP, len(good) * len(bad))):
            i = t % len(good)
            chosen, rejected = good[i], bad[(i + t // len(good)) % len(bad)]
            if chosen[1] - rejected[1] > EPS or rejected[1] - chosen[1] > EPS:  # select drops equal rewards
                pairs.append((p, chosen[0], rejected[0]))
                used |= {chosen[0], rejected[0]}
        if with_drops:
            drops += [(p, c, "select", "verified", "not_selected", f"reward {r:.6g}")
                      for c, r, _ in rows if c not in used]
    if with_drops:
        return pairs, pd.DataFrame(drops, columns=["prompt_id", "candidate_id", "stage", "rule", "reason", "detail"])
    return pairs, None


def loop(pool: pd.DataFrame, rule: str, with_drops: bool):
    if rule == "verified":
        return loop_verified(pool, with_drops)
    groups: dict[str, list] = {}
    for p, c, r in zip(pool["prompt_id"], pool["candidate_id"], pool["reward"]):
        groups.setdefault(p, []).append((c, r))
    pairs, drops = [], []
    for p, rows in groups.items():
        if with_drops:
            ok = [(c, r) for c, r in rows if not math.isnan(r)]
            drops += [(p, c, "select", rule, "score_error", "no reward") for c, r in rows if math.isnan(r)]
            if len(ok) < 2:
                drops.append((p, None, "select", rule, "too_few_valid", f"{len(ok)} valid of {len(rows)} responses"))
                continue
            rows = ok
        rewards = np.array([r for _, r in rows])
        i, j = pick(rule, rewards)
        if rewards[i] - rewards[j] > EPS:
            pairs.append((p, rows[i][0], rows[j][0]))
            if with_drops:
                drops += [(p, c, "select", rule, "not_selected", f"reward {r:.6g}")
                          for n, (c, r) in enumerate(rows) if n != i and n != j]
        elif with_drops:
            flat = rewards.max() - rewards.min() <= EPS
            drops.append((p, None, "select", rule, "zero_variance" if flat else "tie",
                          f"all {len(rows)} rewards = {rewards[i]:.6g}" if flat
                          else f"chosen and rejected both {rewards[i]:.6g}"))
    if with_drops:
        return pairs, pd.DataFrame(drops, columns=["prompt_id", "candidate_id", "stage", "rule", "reason", "detail"])
    return pairs, None


def thp_off() -> None:
    """Transparent huge pages off for this process (and its children), as MIMALLOC_ALLOW_THP=0 does at load."""
    import ctypes
    PR_SET_THP_DISABLE = 41
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE)")


def thp_enabled() -> str | None:
    for line in open("/proc/self/status"):
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    return None


def run_side(side: str, rule: str, n_prompts: int, k: int, thp: str = "default") -> dict:
    """Two timed calls in this fresh process: the first on the pool, the second on a deep copy of it (new arrow
    arrays: select's per-array cache of prompt codes cannot help). Peak RSS: after the first call."""
    if thp == "off":
        thp_off()
    from pipelines.pairs.selection import common, select  # imported outside the timed region
    if side == "select-1-thread":  # the details formatted inline, not on a helper thread
        common.RewardTexts.MIN_ROWS = 2**62

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def call(pool):
        t0, c0 = time.perf_counter(), cpu()
        if side in ("vectorised", "select-1-thread"):
            df, drops = select(pool, rule, RULE_PARAMS.get(rule))
            dt = time.perf_counter() - t0
            pairs = list(zip(df["prompt_id"], df["chosen_id"], df["rejected_id"]))
        else:
            pairs, drops = loop(pool, rule, with_drops=side == "loop+drops")
            dt = time.perf_counter() - t0
        call.cpu = cpu() - c0
        return dt, pairs, drops

    pool = synthetic_pool(n_prompts, k, rule)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cold, pairs, drops = call(pool)
    cold_cpu = call.cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = hashlib.sha256(repr(sorted(pairs)).encode()).hexdigest()
    drops_digest = None
    if drops is not None:  # outside the timed region: every drop row, in no particular order
        rows = zip(drops["prompt_id"], drops["candidate_id"].astype(object).where(drops["candidate_id"].notna(), None),
                   drops["reason"], drops["detail"])
        drops_digest = hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest()
    n_drops = 0 if drops is None else len(drops)
    del drops
    copy = pool.copy(deep=True)
    del pool
    warm, pairs2, drops2 = call(copy)
    assert hashlib.sha256(repr(sorted(pairs2)).encode()).hexdigest() == digest
    assert (0 if drops2 is None else len(drops2)) == n_drops
    return {"seconds": warm, "cold_seconds": cold, "cpu_seconds": call.cpu, "cold_cpu_seconds": cold_cpu,
            "peak_rss_mb": peak / 1024, "pool_rss_mb": base / 1024,
            "pairs_sha256": digest, "n_pairs": len(pairs), "n_drops": n_drops, "drops_sha256": drops_digest,
            "thp_enabled": thp_enabled()}

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rules", default="max_min,mu_2sigma,verified")
    ap.add_argument("--thp", choices=("default", "off"), default="default",
                    help="off: every side without transparent huge pages")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/selection[-thp-off].json)")
    ap.add_argument("--side", nargs=2, metavar=("SIDE", "RULE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(run_side(*args.side, args.prompts, args.k, args.thp)))
        return
    run = record.Run("selection" if args.thp == "default" else "selection-thp-off", args.out)
    sides = ("vectorised", "select-1-thread", "loop", "loop+drops")
    figures = {"prompts": args.prompts, "k": args.k, "candidates": args.prompts * args.k, "repeats": args.repeats,
               "thp": args.thp, "rules": {}}
    for rule in args.rules.split(","):
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for _ in range(args.repeats):
            for side in sides:  # interleaved, so a burst of load from other users hits every side alike
                command = [sys.executable, __file__, "--side", side, rule, "--prompts", str(args.prompts),
                           "--k", str(args.k), "--thp", args.thp]
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        digests = {r["pairs_sha256"] for rs in runs.values() for r in rs}
        assert len(digests) == 1, f"{rule}: pairs differ between sides"
        drop_digests = {r["drops_sha256"] for s in ("vectorised", "select-1-thread", "loop+drops") for r in runs[s]}
        assert len(drop_digests) == 1, f"{rule}: drop rows differ between select and loop+drops"
        med = {s: statistics.median(r["seconds"] for r in rs) for s, rs in runs.items()}
        best = {s: min(r["seconds"] for r in rs) for s, rs in runs.items()}
        cold = {s: min(r["cold_seconds"] for r in rs) for s, rs in runs.items()}
        cpu = {s: min(r["cold_cpu_seconds"] for r in rs) for s, rs in runs.items()}
        print(f"\n{rule}, {args.prompts} prompts x {args.k} = {args.prompts * args.k} candidates, "
              f"{runs['vectorised'][0]['n_pairs']} identical pairs, {runs['vectorised'][0]['n_drops']} identical "
              f"drop rows, {args.repeats} runs per side")
        for s, rs in runs.items():
            print(f"  {s:15s} first call: best {cold[s]:6.3f} s (CPU {cpu[s]:6.3f} s);  second: best {best[s]:6.3f} s, "
                  f"median {med[s]:6.3f} s;  peak RSS {max(r['peak_rss_mb'] for r in rs):5.0f} MB (pool alone "
                  f"{rs[0]['pool_rss_mb']:.0f} MB)  drop rows {rs[0]['n_drops']}")
        for s in ("loop", "loop+drops"):
            for v in ("vectorised", "select-1-thread"):
                print(f"  {s} / {v}: first call best {cold[s] / cold[v]:.1f}x (CPU time {cpu[s] / cpu[v]:.1f}x); "
                      f"second call best {best[s] / best[v]:.1f}x, median {med[s] / med[v]:.1f}x")
        figures["rules"][rule] = {
            "pairs": runs["vectorised"][0]["n_pairs"], "drop_rows": runs["vectorised"][0]["n_drops"],
            "pairs_identical": True, "drop_rows_identical": True,
            "warm_seconds": {s: [round(r["seconds"], 4) for r in rs] for s, rs in runs.items()},
            "cold_seconds": {s: [round(r["cold_seconds"], 4) for r in rs] for s, rs in runs.items()},
            "best_s": {s: round(v, 4) for s, v in best.items()},
            "median_s": {s: round(v, 4) for s, v in med.items()},
            "cold_best_s": {s: round(v, 4) for s, v in cold.items()},
            "speedup_best": {f"{s}/{v}": round(best[s] / best[v], 2) for s in ("loop", "loop+drops")
                             for v in ("vectorised", "select-1-thread")},
            "speedup_median": {f"{s}/{v}": round(med[s] / med[v], 2) for s in ("loop", "loop+drops")
                               for v in ("vectorised", "select-1-thread")},
            "cold_cpu_best_s": {s: round(v, 4) for s, v in cpu.items()},
            "speedup_cold_best": {f"{s}/{v}": round(cold[s] / cold[v], 2) for s in ("loop", "loop+drops")
                                  for v in ("vectorised", "select-1-thread")},
            "speedup_cold_cpu": {f"{s}/{v}": round(cpu[s] / cpu[v], 2) for s in ("loop", "loop+drops")
                                 for v in ("vectorised", "select-1-thread")},
            "peak_rss_mb": {s: round(max(r["peak_rss_mb"] for r in rs)) for s, rs in runs.items()},
            "pool_rss_mb": round(runs["vectorised"][0]["pool_rss_mb"]),
            "thp_enabled": sorted({str(r["thp_enabled"]) for rs in runs.values() for r in rs}),  # /proc/self/status
        }
    run.write(figures)

if __name__ == "__main__":
    main()
