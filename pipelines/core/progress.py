"""Progress of a run: over its batches, and live inside a batch while the sampler works.

Over batches: "batch 3/10 done, 240/800 prompts (30%), 1m12s elapsed, ETA 2m48s". Counted where results arrive
(the flow gathering its batch futures, or the local loop), so it reads the same whatever runs the batches
(threads, Ray). ETA = elapsed / prompts done * prompts left; batches resumed from the cache are counted as done but
not in the rate (they took no time), so a resumed run does not promise too much.

Inside a batch: "batch 1/4: 8/16 prompts sampled, 1,012 tokens, 24.8 tok/s, ETA 41s". A sampler calls
`report_generated(prompts, tokens)` as its engine finishes work inside one `generate` call (the transformers
sampler after each chunk of `batch_prompts` prompts, vLLM per finished request, ray_data per returned row);
the build listens around its sampling stage (`sampling(...)`), which writes a line at most every few seconds
(a tqdm bar when stderr is a terminal) and moves the Prefect progress artifact. No listener, no cost: the
report is one context-variable lookup. Batches on Ray workers report only when they finish.

A run of thousands of batches (a million prompts) reports about a hundred lines, not one per batch: `done`
returns the line when one is due (every batch up to EVERY_BATCH_UNTIL batches, else the first, the last, every
1% of the batches and at least every REPORT_EVERY_S seconds) and None otherwise.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

Listener = Callable[[int, int], None]  # (prompts finished, tokens generated) since the last report
_LISTENER: ContextVar[Listener | None] = ContextVar("pairsmith_generation_listener", default=None)


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


def report_generated(prompts: int = 0, tokens: int = 0) -> None:
    """Called by samplers inside `generate`: `prompts` more prompts have all their samples, `tokens` more tokens
    were generated. Does nothing unless a build listens (`listening`)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(prompts, tokens)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the sampler reports of this thread (and the tasks it starts with copied contexts) to `listener`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


class SamplingProgress:
    """Live progress of one batch's sampling, fed by `report_generated`.

    total_prompts None: the build cannot count prompts from the reports (a step search samples nodes, not
    prompts), so the line shows tokens and the rate only. on_fraction(share of the batch's prompts done) moves a
    progress bar elsewhere (the Prefect artifact)."""

    def __init__(self, label: str, total_prompts: int | None, log: Callable[[str], None] | None,
                 every: float = 5.0, on_fraction: Callable[[float], None] | None = None, bar: bool = False,
                 clock: Callable[[], float] = time.perf_counter):
        self.label, self.total, self.log, self.every = label, total_prompts, log, every
        self.on_fraction, self.clock = on_fraction, clock
        self.started = clock()
        self.prompts = self.tokens = 0
        self.last_logged: float | None = None
        self.bar = _tqdm_bar(label, total_prompts) if bar else None

    def __call__(self, prompts: int, tokens: int) -> None:
        self.prompts += prompts
        self.tokens += tokens
        now = self.clock()
        if self.bar is not None:
            self.bar.update(prompts)
            self.bar.set_postfix_str(f"{self.rate(now):.1f} tok/s", refresh=True)
        elif self.log is not None and not self.finished and (
                self.last_logged is None or now - self.last_logged >= self.every):
            self.log(self.line(now))
            self.last_logged = now
        if self.on_fraction is not None and self.total:
            self.on_fraction(min(1.0, self.prompts / self.total))

    @property
    def finished(self) -> bool:
        """All prompts sampled: the batch's own line follows, no progress line is needed."""
        return self.total is not None and self.prompts >= self.total

    def rate(self, now: float | None = None) -> float:
        elapsed = (self.clock() if now is None else now) - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.started
        text = f"{self.label}: "
        if self.total is not None:
            text += f"{self.prompts}/{self.total} prompts sampled, "
        text += f"{self.tokens:,} tokens, {self.rate(now):.1f} tok/s"
        if self.total is not None and 0 < self.prompts < self.total:
            text += f", ETA {duration(elapsed / self.prompts * (self.total - self.prompts))}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm_bar(label: str, total: int | None):
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="prompt", file=sys.stderr, leave=False, dynamic_ncols=True)


@contextmanager
def sampling(label: str, total_prompts: int | None, log: Callable[[str], None] | None,
             on_fraction: Callable[[float], None] | None = None, every: float = 5.0) -> Iterator[SamplingProgress]:
    """Listen to the sampler while the block runs; a tqdm bar replaces the lines when the log is the terminal."""
    bar = log is to_stderr and sys.stderr.isatty()
    progress = SamplingProgress(label, total_prompts, log, every=every, on_fraction=on_fraction, bar=bar)
    try:
        with listening(progress):
            yield progress
    finally:
        progress.close()
