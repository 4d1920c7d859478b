"""Run untrusted Python programs with their tests in an isolated child process; one process tree per program.

    results = run_programs([Job(program, tests, setup)], limits=Limits(), workers=None)

Process layout: the parent keeps one *server* per worker (`python -S sandbox.py` under util-linux
`unshare --net --uts`), fed jobs over a pipe by one thread each. For every job the server forks a job tree:

    server (root; own network + UTS namespaces: no interface but a downed loopback, so no network at all)
      -> job root (root): unshare(mount, pid, IPC), mount propagation made private first
         -> test process = init of the new pid namespace: fresh /proc, filesystem isolated, privileges
            dropped, then the program and its tests run; when it exits the kernel kills all it left behind

Forking from a warm interpreter (instead of starting one per program) is what makes the pool fast.

Isolation of the test process (each layer is tested in tests/scorers/test_sandbox.py):
1. Namespaces: no network; a private process tree (host pids invisible, daemons die with the test process);
   private SysV IPC; a private mount table.
2. Filesystem, in that mount namespace only: / remounted read-only and nosuid; fresh size-capped tmpfs on /tmp
   (the working directory, /tmp/work, lives there and vanishes with the job), /var/tmp, /dev/shm, /run/lock;
   /root hidden behind an empty tmpfs (the Python installation under it re-exposed read-only).
3. Credentials: an unprivileged uid/gid of its own (one per server: per-uid process limits are per sandbox,
   sandboxes cannot signal each other), no supplementary groups, no capabilities, PR_SET_NO_NEW_PRIVS
   (setuid binaries give nothing back), its own session, a scrubbed environment (PATH, HOME, TMPDIR, LANG).
4. rlimits: CPU seconds, address space, file size (which also caps captured stdout/stderr: they are memfds),
   processes, open files, no core dumps.
5. Wall clock, enforced by the server: SIGKILL to the job root; the parent-death signal takes the test process
   down with it, and a uid sweep (kill(-1) as the sandbox uid) catches anything else of that uid.

Verdicts travel over an inherited anonymous file (fd 3), never stdout. The program and the tests run in one
interpreter, so a program written to *forge* verdicts (writing to fd 3 itself) could: this protects the host,
not the reward against an adversarial policy. Tests that report nothing (the process died or was killed) fail.

Reasons: passed, wrong_answer (AssertionError), runtime_error (other exception), syntax_error, timeout (per-test
alarm, CPU limit or wall clock), memory (MemoryError or address-space kill), output_limit (file size limit
reached: EFBIG), crash (died from a signal, or exited before reporting).

This module is stdlib-only at import time: it is also the script the server runs.
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
    site_packages: bool = False        # False: `python -S`, stdlib only (saves ~50 ms of start-up per program)


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
# Parent side: a pool of sandbox servers, one per worker thread


def _server_cmd() -> list[str]:
    # -S: no site-packages (stdlib programs; ~50 ms less start-up); no -E/-I so PYTHONHASHSEED applies: the
    # environment is built here from scratch, and a fixed hash seed makes set/dict order the same in every run
    return ["unshare", "--net", "--uts", "--", sys.executable, "-s", "-S", "-P", os.path.abspath(__file__)]


SERVER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
              "PYTHONDONTWRITEBYTECODE": "1"}


def check_available() -> None:
    """Raise SandboxUnavailable with the reason when the isolation cannot be set up (run once per scorer)."""
    import shutil
    import subprocess
    if os.geteuid() != 0:
        raise SandboxUnavailable("the execution sandbox needs root (namespaces, uid switch); run as root or in a "
                                 "container where root is mapped")
    if shutil.which("unshare") is None:
        raise SandboxUnavailable("util-linux `unshare` not found (apt-get install util-linux)")
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "--pid", "--ipc", "--fork", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"unshare failed: {probe.stderr.strip()}")


class SandboxServer:
    """A root process in its own network and UTS namespaces that runs jobs one at a time, each in a freshly
    forked, freshly namespaced process tree (see `_run_job`). Forking from a warm interpreter instead of
    starting one per program is what makes the pool fast. Protocol: length-prefixed JSON on stdin/stdout."""

    def __init__(self, slot: int):
        import subprocess
        self.uid = UID_BASE + 64 * (os.getpid() % 1000) + slot
        self.proc = subprocess.Popen(_server_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=SERVER_ENV, process_group=0, cwd="/")

    def run(self, job: Job, limits: Limits) -> Result:
        import select
        spec = {"program": job.program, "tests": job.tests, "setup": job.setup, "uid": self.uid,
                "limits": asdict(limits), "prefixes": sorted({sys.prefix, sys.base_prefix})}
        data = json.dumps(spec).encode()
        self.proc.stdin.write(b"%d\n" % len(data) + data)
        self.proc.stdin.flush()
        # the server enforces the wall clock itself; this is only the guard against a wedged server
        ready, _, _ = select.select([self.proc.stdout], [], [], limits.timeout_s + 30)
        header = self.proc.stdout.readline() if ready else b""
        if not header:
            self.close()
            raise SandboxUnavailable(f"sandbox server died or hung (exit {self.proc.poll()})")
        reply = json.loads(self.proc.stdout.read(int(header)))
        if reply.get("infra_error"):
            raise SandboxUnavailable(f"sandbox set-up failed: {reply['infra_error']}")
        return _classify(job, reply["events"], reply["killed"], reply["seconds"], reply["stdout_tail"],
                         reply["stderr_tail"])

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def run_program(job: Job, limits: Limits = Limits()) -> Result:
    """One job in a fresh sandbox (starts a server for it: use run_programs for many)."""
    return run_programs([job], limits, workers=1)[0]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_programs(jobs: list[Job], limits: Limits = Limits(), workers: int | None = None) -> list[Result]:
    """Run many jobs on a bounded pool of sandbox servers (one thread waits on each); results in job order."""
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if not jobs:
        return []
    workers = min(workers or default_workers(), 64, len(jobs))
    servers: queue.Queue[SandboxServer] = queue.Queue()
    started: list[SandboxServer] = []
    lock = threading.Lock()

    def one(job: Job) -> Result:
        try:
            server = servers.get_nowait()
        except queue.Empty:
            with lock:  # slot numbers (and so uids) must be distinct
                server = SandboxServer(len(started))
                started.append(server)
        try:
            result = server.run(job, limits)
        except SandboxUnavailable:
            server.close()
            raise
        servers.put(server)
        return result

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, jobs))
    finally:
        for server in started:
            server.close()


def _classify(job: Job, events: list[dict], killed: bool, seconds: float, stdout_tail: str,
              stderr_tail: str) -> Result:
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
        raise SandboxUnavailable(f"sandbox init ended without a report: {stderr_tail[-500:]}")
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
    import signal
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
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    # the uid change cleared the parent-death signal: arm it again (the server's uid sweep covers the gap)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()  # its own session and process group: kill(0, ...) reaches nothing but the sandbox
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


CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
MS_PRIVATE, MS_NOEXEC = 1 << 18, 8
PR_SET_PDEATHSIG = 1


def _job_tree(spec: dict, out: int, err: int, res: int) -> None:
    """Runs in a fork of the server: new mount/pid/IPC namespaces; the test process is the new pid namespace's
    init, so when it exits the kernel kills everything it left behind (daemons, fork bombs)."""
    import ctypes
    import signal
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC) != 0:
        raise OSError(ctypes.get_errno(), "unshare(mount, pid, ipc) failed")
    # before any other mount: nothing mounted from here on may propagate back to the host
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
    pid = os.fork()
    if pid == 0:  # pid 1 of the new pid namespace
        code = 70
        try:
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError("prctl(PR_SET_PDEATHSIG) failed")  # the server's SIGKILL reaches us through it
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            code = _test_process(spec, out, err, res)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    how = f"exit {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"
    os.write(res, (json.dumps({"event": "exit", "how": how}) + "\n").encode())


def _test_process(spec: dict, out: int, err: int, res: int) -> int:
    """Isolate the filesystem, drop privileges, run the program and its tests."""
    def emit(event: dict) -> None:
        os.write(RESULT_FD, (json.dumps(event) + "\n").encode())

    for fd, target in ((os.open("/dev/null", os.O_RDONLY), 0), (out, 1), (err, 2), (res, RESULT_FD)):
        os.dup2(fd, target)
    os.closerange(RESULT_FD + 1, 1 << 16)  # the server's protocol pipes and memfds are not the program's
    try:
        workdir = _isolate_filesystem(spec)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises SandboxUnavailable
        emit({"event": "infra_error", "error": _describe(e)})
        return 1
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
    return code


def _read_all(fd: int, limit: int) -> bytes:
    size = os.fstat(fd).st_size
    os.lseek(fd, max(0, size - limit), os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a sandbox uid (only this server's jobs run as it): a helper takes the uid and
    calls kill(-1), which reaches exactly the processes it may signal, i.e. that uid's."""
    import signal
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _run_job(spec: dict) -> dict:
    """Server side of one job: fork the job tree, enforce the wall clock, collect verdicts and output tails."""
    import select
    import signal
    import time
    lim = spec["limits"]
    out, err, res = (os.memfd_create(name) for name in ("stdout", "stderr", "verdicts"))
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            _job_tree(spec, out, err, res)
            code = 0
        except BaseException as e:  # noqa: BLE001
            os.write(res, (json.dumps({"event": "infra_error", "error": _describe(e)}) + "\n").encode())
        finally:
            os._exit(code)
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    killed = not poller.poll(int(lim["timeout_s"] * 1000))
    if killed:  # SIGKILL the job tree's root; PDEATHSIG takes the namespace init, and with it every process
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if killed:
        _kill_uid(spec["uid"])
    os.close(pidfd)
    seconds = time.perf_counter() - t0
    events = [json.loads(line) for line in _read_all(res, 1 << 22).decode("utf-8", "replace").splitlines()
              if line.startswith("{")]
    tails = [_read_all(fd, lim["tail_bytes"]).decode("utf-8", "replace") for fd in (out, err)]
    for fd in (out, err, res):
        os.close(fd)
    infra = next((e["error"] for e in events if e.get("event") == "infra_error"), None)
    return {"events": events, "killed": killed, "seconds": round(seconds, 4), "stdout_tail": tails[0],
            "stderr_tail": tails[1], "infra_error": infra}


def _serve() -> None:
    """Server loop: read a length-prefixed job, run it, write the length-prefixed reply; until stdin closes."""
    import ctypes  # noqa: F401 - imported once here, not in every forked job
    import gc
    import select  # noqa: F401
    gc.freeze()  # the server's objects go to the permanent generation: a child's GC never touches (copies) them
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while header := stdin.readline():
        spec = json.loads(stdin.read(int(header)))
        try:
            reply = _run_job(spec)
        except Exception as e:  # noqa: BLE001
            reply = {"infra_error": _describe(e)}
        data = json.dumps(reply).encode()
        stdout.write(b"%d\n" % len(data) + data)
        stdout.flush()


if __name__ == "__main__":
    _serve()
