"""Run untrusted Python programs with their tests in an isolated child process; one process tree per program.

    results = run_programs([Job(program, tests, setup)], limits=Limits(), workers=None)

Isolation, outermost first (each layer is tested in tests/test_execution_security.py):
1. util-linux `unshare --net --mount --pid --ipc --uts --fork --kill-child --mount-proc`: no network (a fresh
   network namespace has only a downed loopback), a private mount table, a private process tree whose processes
   all die with its init (daemons cannot outlive the program), and a /proc that shows only that tree.
2. This file run as that tree's init (root inside the namespaces), which remounts / read-only and nosuid *for
   this mount namespace only*, mounts fresh size-capped tmpfs on /tmp (the working directory lives there),
   /var/tmp and /dev/shm, hides /root behind an empty tmpfs (re-exposing the Python installation read-only),
   then forks the test process and reaps everything until that process exits.
3. The test process drops to an unprivileged uid/gid of its own (one per pool slot: per-uid process limits are
   per sandbox, and sandboxes cannot signal each other), with no supplementary groups, no capabilities,
   PR_SET_NO_NEW_PRIVS (setuid binaries give nothing back), a scrubbed environment, and rlimits: CPU seconds,
   address space, file size (which also caps captured stdout/stderr: they are files), processes, open files,
   no core dumps.
4. The parent enforces the wall clock: on timeout it SIGKILLs the whole process group, and --kill-child takes
   the namespace init (and so every process in it) down with it.

Verdicts travel over an inherited anonymous file (fd 3), never stdout. The program and the tests run in one
interpreter, so a program written to *forge* verdicts (writing to fd 3 itself) could: this protects the host,
not the reward against an adversarial policy. Tests that report nothing (the process died or was killed) fail.

Reasons: passed, wrong_answer (AssertionError), runtime_error (other exception), syntax_error, timeout (per-test
alarm, CPU limit or wall clock), memory (MemoryError or address-space kill), output_limit (file size limit
reached: EFBIG), crash (died from a signal, or exited before reporting).

This module is stdlib-only at import time: it is also the script the sandbox runs (`python -I sandbox.py`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field

REASONS = ("passed", "wrong_answer", "runtime_error", "syntax_error", "timeout", "memory", "output_limit", "crash")
RESULT_FD = 3
UID_BASE = 200_000  # sandbox uids: UID_BASE + 64 * (pid % 1000) + slot; no file on the host belongs to them


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0           # wall clock for the whole program (all tests); the process group is killed
    test_timeout_s: float = 3.0       # soft per-test alarm, so one hanging test does not fail the others
    cpu_s: int = 10                   # RLIMIT_CPU per process
    memory_mb: int = 1024             # RLIMIT_AS per process
    file_mb: int = 8                  # RLIMIT_FSIZE: any file written, and captured stdout/stderr
    workdir_mb: int = 64              # size of the tmpfs working directory (and of /tmp in the sandbox)
    nproc: int = 32                   # RLIMIT_NPROC for the sandbox uid
    nofile: int = 64                  # RLIMIT_NOFILE
    tail_bytes: int = 2000            # stdout/stderr tail kept in the result


@dataclass
class Job:
    program: str                       # the candidate's code
    tests: list[str]                   # each a separate test, run in order in one namespace
    setup: str = ""                    # run after the program, before the tests (helpers, `candidate = f`)


@dataclass
class TestVerdict:
    ok: bool
    reason: str
    error: str | None = None


@dataclass
class Result:
    verdicts: list[TestVerdict]
    reason: str                        # "passed" or the first failing test's reason (program-level failure)
    stdout_tail: str = ""
    stderr_tail: str = ""
    exit: str = ""                     # how the test process ended: "exit 0", "signal 9", "killed (wall clock)"
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(v.ok for v in self.verdicts)

    @property
    def fraction(self) -> float:
        return self.passed / len(self.verdicts) if self.verdicts else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class SandboxUnavailable(RuntimeError):
    """The namespaces the sandbox needs cannot be created here (not root, no unshare, seccomp...)."""


# ---------------------------------------------------------------------------------------------------------
# Parent side


def _unshare_cmd() -> list[str]:
    return ["unshare", "--net", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc",
            "--", sys.executable, "-I", os.path.abspath(__file__)]


def check_available() -> None:
    """Raise SandboxUnavailable with the reason when the isolation cannot be set up (run once per scorer)."""
    import shutil
    import subprocess
    if os.geteuid() != 0:
        raise SandboxUnavailable("the execution sandbox needs root (namespaces, uid switch); run as root or in a "
                                 "container where root is mapped")
    if shutil.which("unshare") is None:
        raise SandboxUnavailable("util-linux `unshare` not found (apt-get install util-linux)")
    probe = subprocess.run(_unshare_cmd()[:-4] + ["true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"unshare failed: {probe.stderr.strip()}")


def _tail(f, n: int) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - n))
    return f.read().decode("utf-8", "replace")


def run_program(job: Job, limits: Limits = Limits(), slot: int = 0) -> Result:
    """Run one job in a fresh sandbox and classify the outcome."""
    import subprocess
    import tempfile
    import time

    uid = UID_BASE + 64 * (os.getpid() % 1000) + slot
    spec = {"program": job.program, "tests": job.tests, "setup": job.setup, "uid": uid,
            "limits": asdict(limits), "prefixes": sorted({sys.prefix, sys.base_prefix})}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as res:
        stdin.write(json.dumps(spec).encode()), stdin.seek(0)
        t0 = time.perf_counter()
        # the result file keeps its fd number through unshare; the init script moves it to RESULT_FD
        proc = subprocess.Popen(_unshare_cmd() + [str(res.fileno())], stdin=stdin, stdout=out, stderr=err,
                                env=env, pass_fds=(res.fileno(),), process_group=0, cwd="/")
        killed = False
        try:
            proc.wait(timeout=limits.timeout_s + 2.0)  # +2 s: namespace and interpreter start-up
        except subprocess.TimeoutExpired:
            killed = True
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        seconds = time.perf_counter() - t0
        res.seek(0)
        events = [json.loads(line) for line in res.read().decode("utf-8", "replace").splitlines()
                  if line.startswith("{")]
        return _classify(job, events, killed, proc.returncode, seconds,
                         _tail(out, limits.tail_bytes), _tail(err, limits.tail_bytes))


def _classify(job: Job, events: list[dict], killed: bool, returncode: int, seconds: float,
              stdout_tail: str, stderr_tail: str) -> Result:
    by_index: dict[int, TestVerdict] = {}
    program_error = None
    exit_text = None
    infra = None
    for e in events:
        if e.get("event") == "test" and isinstance(e.get("i"), int):
            by_index[e["i"]] = TestVerdict(bool(e["ok"]), str(e["reason"]), e.get("error"))
        elif e.get("event") == "program_error":
            program_error = (e["reason"], e.get("error"))
        elif e.get("event") == "exit":
            exit_text = e["how"]
        elif e.get("event") == "infra_error":
            infra = e.get("error")
    if infra:
        raise SandboxUnavailable(f"sandbox set-up failed: {infra}")
    if killed:
        missing_reason, exit_text = "timeout", "killed (wall clock)"
    elif exit_text is None:
        raise SandboxUnavailable(f"sandbox init ended without a report (exit {returncode}): {stderr_tail[-500:]}")
    elif exit_text in ("signal 9", "signal 24"):   # SIGKILL from RLIMIT_CPU hard limit, SIGXCPU soft
        missing_reason = "timeout"
    elif exit_text in ("signal 11", "signal 6") and "MemoryError" in stderr_tail:
        missing_reason = "memory"
    else:
        missing_reason = "crash"
    if program_error:
        missing_reason = program_error[0]
    verdicts = []
    for i in range(len(job.tests)):
        v = by_index.get(i)
        if v is None:
            detail = program_error[1] if program_error else f"no verdict: test process {exit_text}"
            v = TestVerdict(False, missing_reason, detail)
        verdicts.append(v)
    first_bad = next((v.reason for v in verdicts if not v.ok), None)
    reason = first_bad or ("passed" if verdicts else missing_reason if program_error else "passed")
    return Result(verdicts, reason, stdout_tail, stderr_tail, exit_text or "", round(seconds, 4))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_programs(jobs: list[Job], limits: Limits = Limits(), workers: int | None = None) -> list[Result]:
    """Run many jobs on a bounded thread pool (each thread waits on one sandbox process); results in order."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    workers = min(workers or default_workers(), 64, max(1, len(jobs)))
    slots: queue.Queue[int] = queue.Queue()
    for s in range(workers):
        slots.put(s)

    def one(job: Job) -> Result:
        slot = slots.get()
        try:
            return run_program(job, limits, slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


# ---------------------------------------------------------------------------------------------------------
# Child side: everything below runs inside the namespaces (init as root, then the test process as `uid`)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_SET_NO_NEW_PRIVS = 38


def _mount(libc, source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _isolate_filesystem(spec: dict) -> str:
    """Private, mostly read-only view of the host; returns the working directory (on a fresh tmpfs)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    lim = spec["limits"]
    # keep the Python installation reachable once /root (its home under pyenv) is hidden: bind it to a
    # staging point on a private tmpfs first (the working tmpfs mounted on /tmp later covers the staging one)
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700")
    staged = []
    for i, prefix in enumerate(spec["prefixes"]):
        if prefix.startswith("/root/") or prefix == "/root":
            stage = f"/tmp/stage{i}"
            os.makedirs(stage, exist_ok=True)
            _mount(libc, prefix, stage, None, MS_BIND | MS_REC)
            staged.append((stage, prefix))
    _mount(libc, "none", "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)  # this namespace only
    _mount(libc, "tmpfs", "/root", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for stage, prefix in staged:
        os.makedirs(prefix, exist_ok=True)
        _mount(libc, stage, prefix, None, MS_BIND | MS_REC)
        _mount(libc, "none", prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={lim['workdir_mb']}m,mode=1777")
    for path in ("/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
    workdir = "/tmp/work"
    os.mkdir(workdir, 0o700)
    os.chown(workdir, spec["uid"], spec["uid"])
    return workdir


def _drop_privileges(spec: dict, workdir: str) -> None:
    import ctypes
    import resource
    lim = spec["limits"]
    mb = 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1)),
                       (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
                       (resource.RLIMIT_FSIZE, (lim["file_mb"] * mb,) * 2),
                       (resource.RLIMIT_NPROC, (lim["nproc"],) * 2),
                       (resource.RLIMIT_NOFILE, (lim["nofile"],) * 2),
                       (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(res, value)
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])  # all uids non-zero: the kernel clears every capability
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.chdir(workdir)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": "/tmp", "LANG": "C.UTF-8"})


class _TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so `except Exception` in the program does not swallow it."""


def _reason(exc: BaseException) -> str:
    import errno
    if isinstance(exc, AssertionError):
        return "wrong_answer"
    if isinstance(exc, _TestTimeout):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, RecursionError):
        return "runtime_error"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "output_limit"
    return "runtime_error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _run_tests(spec: dict, emit) -> None:
    """The test process: program, setup, then each test with its own alarm; one verdict line per test."""
    import signal

    def on_alarm(signum, frame):
        raise _TestTimeout(f"test exceeded {spec['limits']['test_timeout_s']} s")

    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    try:
        code = compile(spec["program"], "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        emit({"event": "program_error", "reason": "syntax_error", "error": _describe(e)})
        return
    signal.signal(signal.SIGALRM, on_alarm)
    budget = spec["limits"]["test_timeout_s"]
    for label, source in (("program", code), ("setup", spec["setup"])):
        try:
            signal.setitimer(signal.ITIMER_REAL, budget)
            exec(source if label == "program" else compile(source, "setup.py", "exec"), namespace)
        except BaseException as e:  # noqa: BLE001 - everything the program raises is a verdict
            signal.setitimer(signal.ITIMER_REAL, 0)
            reason = "syntax_error" if isinstance(e, SyntaxError) else _reason(e)
            emit({"event": "program_error", "reason": reason, "error": f"{label}: {_describe(e)}"})
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
    test_namespace = dict(namespace)  # test-local names do not leak into the program's globals
    for i, test in enumerate(spec["tests"]):
        try:
            signal.signal(signal.SIGALRM, on_alarm)  # the program may have replaced it
            signal.setitimer(signal.ITIMER_REAL, budget)
            exec(compile(test, f"test_{i}.py", "exec"), test_namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
            emit({"event": "test", "i": i, "ok": True, "reason": "passed"})
        except BaseException as e:  # noqa: BLE001
            signal.setitimer(signal.ITIMER_REAL, 0)
            emit({"event": "test", "i": i, "ok": False, "reason": _reason(e), "error": _describe(e)})


def _main() -> None:
    """Namespace init: isolate, fork the test process, reap until it exits, report how it ended."""
    fd = int(sys.argv[1])
    if fd != RESULT_FD:
        os.dup2(fd, RESULT_FD)
        os.close(fd)

    def emit(event: dict) -> None:
        os.write(RESULT_FD, (json.dumps(event) + "\n").encode())

    spec = json.loads(sys.stdin.buffer.read())
    try:
        workdir = _isolate_filesystem(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises SandboxUnavailable
        emit({"event": "infra_error", "error": _describe(e)})
        os._exit(1)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _drop_privileges(spec, workdir)
            _run_tests(spec, emit)
        except BaseException as e:  # noqa: BLE001
            try:
                emit({"event": "program_error", "reason": _reason(e), "error": _describe(e)})
            except BaseException:  # noqa: BLE001
                pass
            code = 1
        finally:
            try:
                sys.stdout.flush(), sys.stderr.flush()
            except BaseException:  # noqa: BLE001 - e.g. EFBIG on a full stdout: the verdicts are already out
                pass
            os._exit(code)
    while True:  # as init we also reap orphans (daemonised grandchildren) until the test process is gone
        try:
            done, status = os.wait()
        except ChildProcessError:
            break
        if done == pid:
            how = f"exit {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status) else \
                f"signal {os.WTERMSIG(status)}"
            emit({"event": "exit", "how": how})
            break
    os._exit(0)  # init exits: the kernel kills whatever is left in the namespace (daemons, fork bombs)


if __name__ == "__main__":
    _main()
