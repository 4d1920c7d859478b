"""What the hard time bound costs: math-verify in this process (no bound) vs the worker pool of the scorer.

The pool: scorers/math_verify_pool.py.

    python benchmarks/math_bound.py [--sizes 128,4096] [--workers 2]

Candidates are model-like answers to the shipped word problems (data/math_prompts.jsonl): a short worked line and
"The answer is N.", right for about half of them, k=4 per prompt like the default run (128 = its 32 prompts x 4).
Three ways, same outcomes (asserted): in-process `parse` + `verify` (the old scorer: no time bound, and math-verify
warns that its timeouts are off), the pool cold (workers started inside the timing: the first batch of a run), and
the pool warm (every later batch). Ratios are measured in this one run, on this machine's load.

Results: benchmarks/results/math_bound.json (command, machine, load average before and after, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scorers.math_verify_pool import MathVerifyPool  # noqa: E402


def candidates(n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    rng = random.Random(seed)
    prompts = [json.loads(line) for line in (ROOT / "data" / "math_prompts.jsonl").read_text().splitlines()]
    out = []
    for i in range(n):
        p = prompts[(i // 4) % len(prompts)]
        answer = int(p["answer"]) if rng.random() < 0.5 else int(p["answer"]) + rng.randint(1, 9)
        out.append((f"{p['prompt'].split('.')[0]}. Working it out step by step gives {answer}. "
                    f"The answer is {answer}.", p["answer"], False))
    return out


def in_process(items) -> tuple[float, list[bool]]:
    import logging

    from math_verify import parse, verify
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    golds, out = {}, []
    for text, reference, _ in items:
        if reference not in golds:
            golds[reference] = parse(f"${reference}$", parsing_timeout=None)
        answer = parse(text, parsing_timeout=None)
        out.append(bool(answer) and verify(golds[reference], answer, timeout_seconds=None))
    return time.perf_counter() - t0, out


def pooled(items, workers: int, pool: MathVerifyPool | None = None) -> tuple[float, list[bool], MathVerifyPool]:
    t0 = time.perf_counter()
    pool = pool or MathVerifyPool(workers=workers)
    out = [o["correct"] for o in pool.check(items)]
    return time.perf_counter() - t0, out, pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,4096")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "math_bound.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        items = candidates(n)
        base_s, base = in_process(items)
        cold_s, cold, pool = pooled(items, args.workers)
        warm_s, warm, _ = pooled(items, args.workers, pool)
        pool.close()
        assert base == cold == warm, "the pool and the in-process check disagree"
        rows.append({"candidates": n, "correct": sum(base), "in_process_s": round(base_s, 3),
                     "pool_cold_s": round(cold_s, 3), "pool_warm_s": round(warm_s, 3),
                     "warm_vs_in_process": round(warm_s / base_s, 2), "cold_vs_in_process": round(cold_s / base_s, 2)})
        print(f"{n:6d} candidates ({sum(base)} correct): in-process {base_s:.2f} s ({n / base_s:.0f}/s), pool cold "
              f"{cold_s:.2f} s, warm {warm_s:.2f} s ({n / warm_s:.0f}/s; {args.workers} workers): warm/in-process "
              f"{warm_s / base_s:.2f}x, cold/in-process {cold_s / base_s:.2f}x")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    result = {"command": "python " + " ".join(sys.argv), "machine": machine, "load_average": load,
              "workers": args.workers, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
