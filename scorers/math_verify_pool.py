"""math-verify with a hard time bound per answer: worker processes, killed and replaced when one overruns.

    pool = shared_pool()                                   # one per process, started on first use
    outcomes = pool.check([(answer_text, reference, gold_is_latex), ...])
    # each: {"correct": bool, "extracted": [...]}  or  {"error": "...", "reason": "timeout" | "error"}

Why processes: an answer with an astronomically large value (a power tower such as 9^(9^(9^9)), a factorial of
a power) makes sympy compute without end, in C, holding the GIL; no thread can interrupt it, and math-verify's
own timeouts use SIGALRM, which only the main thread may use (Prefect runs tasks in worker threads). Here every
worker runs math-verify in its own main thread under a per-answer alarm (`timeout_s`, which stops Python-level
work and reports `timeout`), and the parent enforces the hard bound: an answer still running `timeout_s +
grace_s` after it started gets its worker SIGKILLed and replaced, and is reported as `timeout`; the worker's
other answers are resent to the replacement. The others are judged normally and the run finishes.

Fast path: answers go to the workers in chunks (one pipe message per chunk, one line back per answer), the
references are parsed once per worker, and the workers live as long as the process (started eagerly when a
scorer is built, so they import math-verify while the caller does other work).

math-verify's "Timeout is disabled" warnings: the workers give math-verify no timeout of its own (the alarm here
replaces it) and silence those two log lines; the parent never calls math-verify.

The worker side (the bottom of this file) needs only the stdlib and math_verify: it is also the script a
worker runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading

DEFAULT_TIMEOUT_S = 5.0
GRACE_S = 2.0          # on top of timeout_s: the worker's own alarm gets the first chance
CHUNK = 32             # answers per message to a worker
MEMORY_MB = 4096       # RLIMIT_AS of a worker: a runaway big integer fails instead of taking the machine


class MathVerifyPool:
    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, grace_s: float = GRACE_S):
        self.size = workers or min(2, max(1, len(os.sched_getaffinity(0))))
        self.timeout_s, self.grace_s = timeout_s, grace_s
        self.lock = threading.Lock()  # one check at a time per pool (Prefect may call from several threads)
        self.workers: list[_Worker] = []
        self.restarts = 0

    def start(self) -> None:
        """Start the workers without waiting for them (they import math-verify meanwhile)."""
        while len(self.workers) < self.size:
            self.workers.append(_Worker(self.timeout_s))

    def check(self, items: list[tuple[str, str, bool]]) -> list[dict]:
        """One outcome per (answer text, reference, gold_is_latex), in order."""
        import select
        import time
        if not items:
            return []
        with self.lock:
            self.start()
            results: list[dict | None] = [None] * len(items)
            pending = [list(range(i, min(i + CHUNK, len(items)))) for i in range(0, len(items), CHUNK)]
            busy: dict[int, _Worker] = {}
            hard = self.timeout_s + self.grace_s
            while pending or busy:
                for w in self.workers:
                    if pending and w.fd not in busy:
                        w.send(pending.pop(0), items)
                        busy[w.fd] = w
                now = time.monotonic()
                wait = max(0.0, min(w.deadline(hard) for w in busy.values()) - now)
                ready, _, _ = select.select(list(busy), [], [], wait)
                for fd in ready:
                    w = busy[fd]
                    for i, outcome in w.receive():
                        results[i] = outcome
                    if w.done():
                        del busy[fd]
                now = time.monotonic()
                for fd, w in list(busy.items()):
                    if w.dead() or now >= w.deadline(hard):
                        stuck, rest = w.current(), w.remaining()
                        how = (f"the verifier did not return within {hard:.1f} s (worker killed)" if not w.dead()
                               else f"the verifier's worker died ({w.proc.poll()})")
                        results[stuck] = {"error": f"timeout: {how}", "reason": "timeout",
                                          "seconds": round(now - w.started, 3)}
                        w.kill()
                        del busy[fd]
                        self.workers[self.workers.index(w)] = _Worker(self.timeout_s)
                        self.restarts += 1
                        if rest:
                            pending.insert(0, rest)
            return results  # type: ignore[return-value]

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []


class _Worker:
    """One worker process and the chunk it is working on."""

    def __init__(self, timeout_s: float):
        import subprocess
        self.proc = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), str(timeout_s),
                                      str(MEMORY_MB), str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.chunk: list[int] = []
        self.position = 0
        self.started = 0.0   # when the current answer started (the last line received, or the send)
        self.ready = False   # the worker said it has imported math-verify: deadlines count from then

    def send(self, chunk: list[int], items) -> None:
        import time
        self.chunk, self.position = chunk, 0
        self.started = time.monotonic()
        data = json.dumps([[items[i][0], items[i][1], bool(items[i][2])] for i in chunk]).encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> list[tuple[int, dict]]:
        import time
        data = os.read(self.fd, 1 << 20)
        if not data:
            return []
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        out = []
        for line in lines:
            message = json.loads(line)
            self.started = time.monotonic()
            if message == "ready":
                self.ready = True
                continue
            out.append((self.chunk[self.position], message))
            self.position += 1
        return out

    def deadline(self, hard: float) -> float:
        # until the worker has imported math-verify, allow for that too (a cold start under load can take a while)
        return self.started + (hard if self.ready else hard + 60.0)

    def done(self) -> bool:
        return self.position >= len(self.chunk)

    def current(self) -> int:
        return self.chunk[self.position]

    def remaining(self) -> list[int]:
        return self.chunk[self.position + 1:]

    def dead(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


_SHARED: dict[tuple, MathVerifyPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None) -> MathVerifyPool:
    """The process's pool for these settings, started on first use and closed at exit."""
    import atexit
    key = (timeout_s, workers)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = MathVerifyPool(workers, timeout_s)
            _SHARED[key].start()
            atexit.register(_SHARED[key].close)
    return _SHARED[key]


# ---------------------------------------------------------------------------------------------------------
# Worker side: runs as `python -P math_verify_pool.py TIMEOUT_S MEMORY_MB PARENT_PID`, one JSON chunk per input
# line, one JSON outcome per answer per output line. It ends when its stdin closes, or with its parent process (a
# worker stuck in sympy would never read the closed stdin): see _watch_parent.


class _AnswerTimeout(BaseException):
    """The per-answer alarm; a BaseException so math-verify's `except Exception` does not swallow it."""


def _describe(values) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(v)[:200])
        except Exception as e:  # noqa: BLE001 - str() of a huge sympy integer can raise (digit limit)
            out.append(f"<{type(v).__name__}: {type(e).__name__}>")
    return out


def _watch_parent(parent: int) -> None:
    """Fork a watchdog that SIGKILLs this worker when the parent *process* ends (PR_SET_PDEATHSIG on the worker
    itself would fire when the parent's *thread* that started it ends, and pools start from Prefect's worker
    threads). The watchdog dies with the worker (single-threaded: there PDEATHSIG means the process)."""
    import ctypes
    import select
    import signal
    worker = os.getpid()
    if os.fork():
        return
    try:
        os.close(0), os.close(1)  # not a reader or writer of the worker's pipes: EOF must reach both ends
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        try:
            select.select([os.pidfd_open(parent)], [], [])  # readable once the parent has exited
        except ProcessLookupError:
            pass  # already gone
        os.kill(worker, signal.SIGKILL)
    finally:
        os._exit(0)


def _serve(timeout_s: float, memory_mb: int, parent: int) -> None:
    import logging
    import resource
    import signal
    if sys.platform.startswith("linux"):
        _watch_parent(parent)
    mb = 1 << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb, memory_mb * mb))
    from math_verify import parse, verify
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "Timeout is disabled" warnings: see above

    def on_alarm(signum, frame):
        raise _AnswerTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    golds: dict[tuple[str, bool], object] = {}
    out = sys.stdout.buffer

    def judge(text: str, reference: str, latex: bool) -> dict:
        key = (reference, latex)
        if key not in golds:
            gold = parse(reference if latex else f"${reference}$", parsing_timeout=None)
            if not gold:
                raise ValueError(f"reference {reference!r} does not parse")
            golds[key] = gold
        answer = parse(text, parsing_timeout=None)
        correct = bool(answer) and verify(golds[key], answer, timeout_seconds=None)
        return {"correct": bool(correct), "extracted": _describe(answer)}

    out.write(b'"ready"\n')
    out.flush()
    for line in sys.stdin.buffer:
        for text, reference, latex in json.loads(line):
            try:
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
                outcome = judge(text, reference, latex)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except _AnswerTimeout:
                outcome = {"error": f"timeout: the verifier did not return within {timeout_s:.1f} s",
                           "reason": "timeout", "seconds": timeout_s}
            except Exception as e:  # noqa: BLE001 - any failure of the verifier is an error row, not a score
                signal.setitimer(signal.ITIMER_REAL, 0)
                outcome = {"error": f"math-verify: {type(e).__name__}: {str(e)[:300]}", "reason": "error"}
            out.write(json.dumps(outcome).encode() + b"\n")
            out.flush()


if __name__ == "__main__":
    _serve(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
