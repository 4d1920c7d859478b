"""Progress of a run over its batches: "batch 3/10 done, 240/800 prompts (30%), 1m12s elapsed, ETA 2m48s".

Counted where results arrive (the flow gathering its batch futures, or the local loop), so it reads the same
whatever runs the batches (threads, Ray). ETA = elapsed / prompts done * prompts left; batches resumed from the
cache are counted as done but not in the rate (they took no time), so a resumed run does not promise too much.
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


@dataclass
class BatchProgress:
    total_batches: int
    total_prompts: int
    started: float = field(default_factory=lambda: time.perf_counter())
    batches: int = 0
    prompts: int = 0
    computed_prompts: int = 0  # prompts of batches that ran now (not resumed): the basis of the rate

    def done(self, n_prompts: int, resumed: bool = False) -> str:
        """Record a finished batch; returns the progress line."""
        self.batches += 1
        self.prompts += n_prompts
        if not resumed:
            self.computed_prompts += n_prompts
        elapsed = time.perf_counter() - self.started
        left = self.total_prompts - self.prompts
        if left <= 0:
            eta = "done"
        elif self.computed_prompts:
            eta = f"ETA {duration(elapsed / self.computed_prompts * left)}"
        else:
            eta = "ETA unknown"
        pct = 100.0 * self.prompts / self.total_prompts if self.total_prompts else 100.0
        return (f"batch {self.batches}/{self.total_batches} done, {self.prompts}/{self.total_prompts} prompts "
                f"({pct:.0f}%), {duration(elapsed)} elapsed, {eta}")

    @property
    def fraction(self) -> float:
        return self.prompts / self.total_prompts if self.total_prompts else 1.0
