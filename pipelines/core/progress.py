"""Progress of a run over its batches: "batch 3/10 done, 240/800 prompts (30%), 1m12s elapsed, ETA 2m48s".

Counted where results arrive (the flow gathering its batch futures, or the local loop), so it reads the same
whatever runs the batches (threads, Ray). ETA = elapsed / prompts done * prompts left; batches resumed from the
cache are counted as done but not in the rate (they took no time), so a resumed run does not promise too much.

A run of thousands of batches (a million prompts) reports about a hundred lines, not one per batch: `done`
returns the line when one is due (every batch up to EVERY_BATCH_UNTIL batches, else the first, the last, every
1% of the batches and at least every REPORT_EVERY_S seconds) and None otherwise.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


def to_stderr(message: str) -> None:
    """The default log of runs without Prefect: progress on stderr, so stdout keeps only the summary."""
    print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


EVERY_BATCH_UNTIL = 100   # runs with at most this many batches report every batch
REPORT_EVERY_S = 30.0     # else at least this often (while batches arrive)


@dataclass
class BatchProgress:
    total_batches: int
    total_prompts: int
    started: float = field(default_factory=lambda: time.perf_counter())
    batches: int = 0
    prompts: int = 0
    computed_prompts: int = 0  # prompts of batches that ran now (not resumed): the basis of the rate
    reported_batches: int = 0
    reported_at: float | None = None

    def done(self, n_prompts: int, resumed: bool = False) -> str | None:
        """Record a finished batch; returns the progress line when one is due (see the module doc), else None."""
        self.batches += 1
        self.prompts += n_prompts
        if not resumed:
            self.computed_prompts += n_prompts
        now = time.perf_counter()
        elapsed = now - self.started
        left = self.total_prompts - self.prompts
        if left <= 0:
            eta = "done"
        elif self.computed_prompts:
            eta = f"ETA {duration(elapsed / self.computed_prompts * left)}"
        else:
            eta = "ETA unknown"
        pct = 100.0 * self.prompts / self.total_prompts if self.total_prompts else 100.0
        due = (self.total_batches <= EVERY_BATCH_UNTIL or self.batches in (1, self.total_batches)
               or self.batches - self.reported_batches >= max(1, self.total_batches // 100)
               or (self.reported_at is not None and now - self.reported_at >= REPORT_EVERY_S))
        if not due:
            return None
        self.reported_batches, self.reported_at = self.batches, now
        return (f"batch {self.batches}/{self.total_batches} done, {self.prompts}/{self.total_prompts} prompts "
                f"({pct:.0f}%), {duration(elapsed)} elapsed, {eta}")

    @property
    def fraction(self) -> float:
        return self.prompts / self.total_prompts if self.total_prompts else 1.0
