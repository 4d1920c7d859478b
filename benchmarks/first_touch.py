"""What a first touch of memory costs on this machine: 256 MiB filled right after the same amount was freed, and
after waiting 1-5 s, with numpy's transparent huge pages (its default: madvise on arrays >= 4 MB) and without.

    python benchmarks/first_touch.py [--mib 256] [--repeats 2]

Why it is a benchmark: on a VM whose balloon reports free pages to the host (record.memory_facts:
free_page_reporting), memory freed for more than ~2 s goes back to the hypervisor in 2 MB blocks, and a huge page
made of such a block costs a host fault on its first touch. Any benchmark that allocates large buffers in a fresh
process (benchmarks/selection.py's first call) pays that by when its pages were last freed, by itself or by the
process before. The table says how much, on the machine of the run.
Results: benchmarks/results/first-touch.json (command, machine, load average, figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import record  # noqa: E402

WAITS = (0.0, 1.0, 2.0, 3.0, 5.0)


def fill_seconds(n_bytes: int) -> float:
    t0 = time.perf_counter()
    a = np.ones(n_bytes // 8)
    dt = time.perf_counter() - t0
    del a  # freed at once: the next fill may get the same pages back
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    run = record.Run("first-touch", args.out)
    n = args.mib << 20
    set_hugepage = np._core.multiarray._set_madvise_hugepage  # what numpy's import calls with NUMPY_MADVISE_HUGEPAGE
    figures = {"mib": args.mib, "repeats": args.repeats, "waits_s": list(WAITS), "ms": {}}
    for pages in ("huge", "4k"):
        set_hugepage(pages == "huge")
        fill_seconds(n)  # the first fill of the process: fresh memory either way
        runs = {w: [] for w in WAITS}
        for _ in range(args.repeats):
            for w in WAITS:
                time.sleep(w)
                runs[w].append(fill_seconds(n) * 1000)
        figures["ms"][pages] = {str(w): [round(x, 1) for x in v] for w, v in runs.items()}
        print(f"{args.mib} MiB, {pages:4s} pages, filled after waiting " + ", ".join(
            f"{w:g} s: {statistics.median(v):5.0f} ms" for w, v in runs.items()))
    huge, small = figures["ms"]["huge"], figures["ms"]["4k"]
    figures["huge_after_5s_vs_at_once"] = round(statistics.median(huge["5.0"]) / statistics.median(huge["0.0"]), 1)
    figures["4k_after_5s_vs_at_once"] = round(statistics.median(small["5.0"]) / statistics.median(small["0.0"]), 1)
    print(f"huge pages: {figures['huge_after_5s_vs_at_once']}x slower 5 s after the free than at once; "
          f"4 KB pages: {figures['4k_after_5s_vs_at_once']}x; machine: {record.memory_facts()}")
    run.write(figures)


if __name__ == "__main__":
    main()
