"""Run untrusted Python programs against their tests in isolated processes; the tests, not the program, decide.

    results = run_programs([Job(program, tests, setup, context, entry_point)], limits=Limits(), workers=None)

Process layout: the parent keeps one *server* per worker (`python -S sandbox.py` under util-linux
`unshare --net --uts`), fed jobs over a pipe by one thread each. For every job the server forks a job tree:

    server (root; own network + UTS namespaces: no interface but a downed loopback, so no network at all)
      -> job root (root): unshare(mount, pid, IPC), mount propagation made private first
         -> harness = init of the new pid namespace (root): fresh /proc, filesystem isolated; when it exits the
            kernel kills everything left in the namespace
            -> program process (uid P): runs the candidate program, then answers calls, nothing else
            -> test process (uid T != P): runs the setup and the tests; every name the tests use that the
               program defines is a stub that asks the program process over a pipe

Forking from a warm interpreter (instead of starting one per program) is what makes the pool fast.

Reward integrity: the program never sees the tests and never runs in the process that decides.
- The tests travel in a root-only file that only the test process reads (opened by the harness, never read by
  the server the program process is forked from), so they are not in the program's memory to be parsed.
- Only plain builtin values cross the boundary, as JSON with type tags (int, float, str, bytes, bool, None,
  complex, list, tuple, dict, set, frozenset): the test process rebuilds them itself, so `candidate(x) == y`
  compares two builtin values there. An object that answers `==` for itself cannot cross (`not_serializable`);
  an instance of a subclass of a builtin type crosses as its plain builtin value (a str subclass becomes a str).
  Exceptions cross as the nearest builtin exception type, with their message.
- The verdicts are written by the test process, which the program cannot signal, trace or read (another uid,
  no capabilities; its result fd is not in the program's fd table). Whatever the program writes on any fd it
  has, the call channel included, is at most a return value: a reply that is not the answer to the call just
  made is `tampered`. An exit before or during the tests is `early_exit`.
- Tamper evidence in the program process (a cheap check after every call, a full one after loading and at the
  end): replaced or deleted builtins, sys hooks (excepthook, displayhook, unraisablehook, breakpointhook),
  tracing and profiling hooks (sys and threading), a replaced SIGALRM handler, changed import machinery
  (sys.path, meta_path, path_hooks) and replaced functions of the pre-imported stdlib modules or of this
  harness. Any of these makes every test of the program `tampered` (the detail says what changed). The check
  runs inside the untrusted process, so a program can evade the *evidence*; it cannot forge the verdicts.
- When the job has a `context` (HumanEval: the code prompt), the helper functions it defines (e.g. the
  `encode_cyclic` that tests of `decode_cyclic` call) are the trusted copies in the test process, not the
  program's: a program cannot redefine the helper the tests use.

Host isolation of both processes (each layer is tested in tests/scorers/test_sandbox.py):
1. Namespaces: no network; a private process tree (host pids invisible, daemons die with the job); private
   SysV IPC; a private mount table.
2. Filesystem, in that mount namespace only: / remounted read-only and nosuid; fresh size-capped tmpfs on /tmp
   (the program's working directory /tmp/work and the tests' /tmp/tests live there, 0700 each, and vanish with
   the job), /var/tmp, /dev/shm, /run/lock; /root hidden behind an empty tmpfs (the Python installation under
   it re-exposed read-only).
3. Credentials: an unprivileged uid/gid of its own per process and server (per-uid process limits are per
   sandbox, sandboxes cannot signal each other), no supplementary groups, no capabilities, PR_SET_NO_NEW_PRIVS
   (setuid binaries give nothing back), its own session, a scrubbed environment (PATH, HOME, TMPDIR, LANG).
4. rlimits: CPU seconds, address space, file size (which also caps captured stdout/stderr: they are memfds),
   processes, open files, no core dumps.
5. Wall clock, enforced by the server: SIGKILL to the job root; the parent-death signal takes the harness (and
   so the pid namespace) down with it, and a uid sweep (kill(-1) as each sandbox uid) catches anything else.

Reasons: passed, wrong_answer (AssertionError), runtime_error (other exception), syntax_error, timeout (per-test
alarm, CPU limit or wall clock), memory (MemoryError or address-space kill), output_limit (file size limit
reached: EFBIG, or a reply over MAX_REPLY_BYTES), crash (the program died from a signal), early_exit (the
program exited before or while answering), not_serializable (a value that is not plain builtin data had to
cross the boundary), tampered (see above).

This module is stdlib-only at import time: it is also the script the server runs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field

REASONS = ("passed", "wrong_answer", "runtime_error", "syntax_error", "timeout", "memory", "output_limit", "crash",
           "early_exit", "not_serializable", "tampered")
UID_BASE = 200_000  # sandbox uids: UID_BASE + 128 * (pid % 1000) + 2 * slot + role; no host file belongs to them
MAX_REPLY_BYTES = 16 << 20  # one value crossing the boundary, encoded
# imported by the server before it forks: programs and tests that use them start faster, and their functions
# are part of the tamper check (a program that patches math.isclose is caught)
PRELOADED = ("math", "random", "re", "string", "itertools", "functools", "collections", "operator", "copy", "heapq",
             "bisect", "typing")  # what HumanEval's prompts and tests import; each fork copies the page tables


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0           # wall clock for the whole job (all tests); the process tree is killed
    test_timeout_s: float = 3.0       # per-test alarm (and for loading the program), so one hang fails one test
    cpu_s: int = 10                   # RLIMIT_CPU per process
    memory_mb: int = 1024             # RLIMIT_AS per process
    file_mb: int = 8                  # RLIMIT_FSIZE: any file written, and captured stdout/stderr
    workdir_mb: int = 64              # size of the tmpfs working directory (and of /tmp in the sandbox)
    nproc: int = 32                   # RLIMIT_NPROC for each sandbox uid
    nofile: int = 64                  # RLIMIT_NOFILE
    tail_bytes: int = 2000            # stdout/stderr tail kept in the result


@dataclass
class Job:
    program: str                       # the candidate's code: runs in the program process only
    tests: list[str]                   # each a separate test, run in order in one namespace of the test process
    setup: str = ""                    # test code run before the tests (helpers, `def check`, `candidate = f`)
    context: str = ""                  # trusted code run first in the test process (the code prompt's helpers)
    entry_point: str | None = None     # the function under test: always the program's, even if context defines it


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
    exit: str = ""                     # how the program process ended: "exit 0", "signal 9", "killed (wall clock)"
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
    # environment is built here from scratch, and a fixed hash seed makes set/dict order the same in every run.
    # -P: the script's directory is not on sys.path (nothing a program writes can shadow a module)
    return ["unshare", "--net", "--uts", "--", sys.executable, "-s", "-S", "-P", os.path.abspath(__file__)]


def _site_packages() -> list[str]:
    import site
    return sorted({*site.getsitepackages(), site.getusersitepackages()} - {""})


_HIDDEN = _site_packages()  # the server runs `python -S`: nothing there is importable in the sandbox anyway
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


def _names(source: str) -> tuple[set[str], set[str]]:
    """(global names the code reads, names it binds at top level), from the compiler's own symbol tables."""
    import symtable
    try:
        top = symtable.symtable(source, "<tests>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set(), set()
    used, bound = set(), set()
    for s in top.get_symbols():
        if s.is_assigned() or s.is_imported() or s.is_namespace():
            bound.add(s.get_name())
        if s.is_referenced():
            used.add(s.get_name())
    scopes = list(top.get_children())
    while scopes:
        scope = scopes.pop()
        scopes += scope.get_children()
        for s in scope.get_symbols():
            if s.is_global() and s.is_referenced():
                used.add(s.get_name())
            if s.is_declared_global() and s.is_assigned():
                bound.add(s.get_name())
    return used, bound


def test_payload(job: Job) -> dict:
    """What the test process gets: the test code, and per piece the names it must ask the program for (the
    global names it reads that neither the test code, the trusted context nor builtins define)."""
    import builtins
    setup_used, setup_bound = _names(job.setup)
    test_names = [_names(t) for t in job.tests]
    _, context_bound = _names(job.context)
    bound = setup_bound | context_bound.difference({job.entry_point}) | set().union(*(b for _, b in test_names))
    remote = (setup_used | set().union(*(u for u, _ in test_names))) - bound - set(dir(builtins))
    if job.entry_point and job.entry_point in context_bound:
        remote.add(job.entry_point)  # the context's def is the prompt's stub: the function under test is remote
    return {"context": job.context, "setup": job.setup, "tests": list(job.tests), "entry_point": job.entry_point,
            "setup_names": sorted((setup_used & remote) | ({job.entry_point} & remote)),
            "test_names": [sorted(u & remote) for u, _ in test_names],
            "prefetch": _literal_calls(job.setup, job.tests, remote)}


MAX_PREFETCH = 256


def _literal_calls(setup: str, tests: list[str], remote: set[str]) -> list[list]:
    """[name, args, kwargs] of every call in the tests of a program name (or an alias of one set in the setup,
    like HumanEval's `candidate = f`) whose arguments are all literals, in the order the tests make them. The
    test process asks for all of them in one message (a round trip per call costs two wakeups, and far more
    while the CPUs are busy); a call the tests then make with the same arguments takes the next such answer."""
    import ast
    aliases = {name: name for name in remote}
    try:
        for stmt in ast.parse(setup).body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and isinstance(stmt.value, ast.Name) and stmt.value.id in remote:
                aliases[stmt.targets[0].id] = stmt.value.id
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    calls = []
    for test in tests:
        try:
            nodes = [ast.parse(test)]
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        while nodes and len(calls) < MAX_PREFETCH:  # pre-order, children in field order: the order they run in
            node = nodes.pop()
            nodes += reversed(list(ast.iter_child_nodes(node)))
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in aliases):
                continue
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                continue
            try:
                args = [ast.literal_eval(a) for a in node.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                calls.append([aliases[node.func.id], _encode(args), _encode(kwargs)])
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, _NotSerializable):
                continue
    return calls


class SandboxServer:
    """A root process in its own network and UTS namespaces that runs jobs one at a time, each in a freshly
    forked, freshly namespaced process tree (see `_run_job`). Protocol: length-prefixed JSON on stdin/stdout."""

    def __init__(self, slot: int):
        import subprocess
        self.uid = UID_BASE + 128 * (os.getpid() % 1000) + 2 * slot  # program uid; the tests run as uid + 1
        self.proc = subprocess.Popen(_server_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=SERVER_ENV, process_group=0, cwd="/")

    def run(self, job: Job, tests_path: str, names: list[str], limits: Limits) -> Result:
        import select
        spec = {"program": job.program, "tests_path": tests_path, "names": names, "uid": self.uid,
                "limits": asdict(limits), "prefixes": sorted({sys.prefix, sys.base_prefix}), "hidden": _HIDDEN}
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
    import hashlib
    import queue
    import shutil
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if not jobs:
        return []
    workers = min(workers or default_workers(), 64, len(jobs))
    servers: queue.Queue[SandboxServer] = queue.Queue()
    started: list[SandboxServer] = []
    lock = threading.Lock()
    # the tests of each distinct job, one root-only file each (k candidates of a prompt share one)
    tests_dir = tempfile.mkdtemp(prefix="pairsmith-tests-")
    written: dict[tuple, tuple[str, list[str]]] = {}
    writing = threading.Lock()

    def tests_file(job: Job) -> tuple[str, list[str]]:
        """(path, names) of the job's tests file, written once per distinct tests (in the worker threads, so
        it overlaps the other servers' jobs)."""
        key = (job.setup, tuple(job.tests), job.context, job.entry_point)
        with writing:
            if key not in written:
                payload = test_payload(job)
                path = os.path.join(tests_dir, hashlib.sha256(repr(key).encode()).hexdigest()[:32] + ".json")
                with open(path, "w") as f:
                    json.dump(payload, f)
                written[key] = (path, sorted(set(payload["setup_names"]).union(*payload["test_names"])))
            return written[key]

    def one(job: Job) -> Result:
        path, names = tests_file(job)
        try:
            server = servers.get_nowait()
        except queue.Empty:
            with lock:  # slot numbers (and so uids) must be distinct
                server = SandboxServer(len(started))
                started.append(server)
        try:
            result = server.run(job, path, names, limits)
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
        shutil.rmtree(tests_dir, ignore_errors=True)


def _program_gone_reason(how: str, stderr_tail: str) -> str:
    if how.startswith("exit"):
        return "early_exit"
    if how in ("signal 9", "signal 24"):   # SIGKILL from RLIMIT_CPU hard limit, SIGXCPU soft
        return "timeout"
    if how in ("signal 11", "signal 6") and "MemoryError" in stderr_tail:
        return "memory"
    return "crash"


def _classify(job: Job, events: list[dict], killed: bool, seconds: float, stdout_tail: str,
              stderr_tail: str) -> Result:
    by_index: dict[int, TestVerdict] = {}
    program_error = None
    exit_text = program_exit = tampered = infra = None
    for e in events:
        kind = e.get("event")
        if kind == "test" and isinstance(e.get("i"), int):
            by_index[e["i"]] = TestVerdict(bool(e["ok"]), str(e["reason"]), e.get("error"))
        elif kind == "program_error":
            program_error = (str(e["reason"]), e.get("error"))
        elif kind == "tampered":
            tampered = tampered or str(e.get("error"))
        elif kind == "exit":
            exit_text = e["how"]
        elif kind == "program_exit":
            program_exit = e["how"]
        elif kind == "infra_error":
            infra = e.get("error")
    if infra:
        raise SandboxUnavailable(f"sandbox set-up failed: {infra}")
    if killed:
        missing_reason, exit_text, program_exit = "timeout", "killed (wall clock)", "killed (wall clock)"
    elif exit_text is None:
        raise SandboxUnavailable(f"sandbox harness ended without a report: {stderr_tail[-500:]}")
    elif exit_text in ("signal 9", "signal 24"):
        missing_reason = "timeout"
    elif exit_text in ("signal 11", "signal 6"):
        missing_reason = "memory" if "MemoryError" in stderr_tail else "crash"
    else:
        missing_reason = "crash"
    gone = _program_gone_reason(program_exit or "", stderr_tail)
    if program_error:
        missing_reason = gone if program_error[0] == "program_gone" else program_error[0]
    verdicts = []
    for i in range(len(job.tests)):
        v = by_index.get(i)
        if v is None:
            detail = program_error[1] if program_error else f"no verdict: test process {exit_text}"
            v = TestVerdict(False, missing_reason, detail)
        elif v.reason == "program_gone":
            v = TestVerdict(False, gone, f"{v.error} ({program_exit})")
        if tampered:
            v = TestVerdict(False, "tampered", tampered)
        verdicts.append(v)
    first_bad = next((v.reason for v in verdicts if not v.ok), None)
    reason = first_bad or ("passed" if verdicts else missing_reason if program_error else "passed")
    if program_error and program_error[0] == "tampered":
        tampered = tampered or str(program_error[1])
    extra = {"tampered": tampered} if tampered else {}
    return Result(verdicts, reason, stdout_tail, stderr_tail, program_exit or exit_text or "", round(seconds, 4),
                  extra)


# ---------------------------------------------------------------------------------------------------------
# Values across the boundary: plain builtin data as JSON with type tags. Encoding runs on either side; decoding
# builds only builtin values and refuses anything else, so it is safe on bytes the program wrote.


class _NotSerializable(Exception):
    pass


class _Malformed(Exception):
    pass


_BASES = (int, float, str, bytes, bytearray, complex, list, tuple, dict, set, frozenset)


def _encode(v, depth: int = 0):
    if depth > 200:
        raise _NotSerializable("nested deeper than 200 levels")
    t = type(v)
    if v is None or t is bool or t is str or t is float:
        return v
    if t is int:
        return v if -(1 << 53) < v < (1 << 53) else {"int": hex(v)}  # hex: no int/str digit limit
    if t is list:
        return [_encode(x, depth + 1) for x in v]
    if t is tuple:
        return {"tuple": [_encode(x, depth + 1) for x in v]}
    if t is dict:
        return {"dict": [[_encode(k, depth + 1), _encode(x, depth + 1)] for k, x in v.items()]}
    if t is set or t is frozenset:
        return {t.__name__: [_encode(x, depth + 1) for x in v]}
    if t is bytes or t is bytearray:
        return {t.__name__: v.hex()}
    if t is complex:
        return {"complex": [v.real, v.imag]}
    for base in _BASES:  # a subclass crosses as its plain builtin value, never as itself
        if isinstance(v, base):
            try:
                plain = base(v)
            except Exception as e:  # noqa: BLE001 - e.g. a `__class__` that claims a type it is not
                raise _NotSerializable(f"a {base.__name__} that cannot be converted ({type(e).__name__})") from None
            return _encode(plain, depth + 1)
    raise _NotSerializable(f"a {getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', t)} object, not "
                           f"plain builtin data")


def _decode(x, depth: int = 0):
    if depth > 200:
        raise _Malformed("nested deeper than 200 levels")
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if t is list:
        return [_decode(i, depth + 1) for i in x]
    if t is dict and len(x) == 1:
        (tag, value), = x.items()
        tv = type(value)
        if tag == "int" and tv is str:
            return int(value, 16)
        if tv is list and tag in ("tuple", "set", "frozenset"):
            items = [_decode(i, depth + 1) for i in value]
            return tuple(items) if tag == "tuple" else set(items) if tag == "set" else frozenset(items)
        if tag == "dict" and tv is list and all(type(kv) is list and len(kv) == 2 for kv in value):
            return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in value}
        if tag in ("bytes", "bytearray") and tv is str:
            return bytes.fromhex(value) if tag == "bytes" else bytearray.fromhex(value)
        if tag == "complex" and tv is list and len(value) == 2 and all(type(p) in (int, float) for p in value):
            return complex(value[0], value[1])
    raise _Malformed(f"not a value: {str(x)[:80]}")


def _parse_value(data) -> object:
    """Reply JSON -> builtin value; anything malformed raises _Malformed."""
    try:
        return _decode(data)
    except _Malformed:
        raise
    except (TypeError, ValueError, RecursionError, OverflowError) as e:  # unhashable set items, bad hex...
        raise _Malformed(f"{type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# Child side: everything below runs inside the namespaces (the harness as root, then its two children as
# their own uids)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_SET_NO_NEW_PRIVS = 38
PROGRAM_DIR, TESTS_DIR = "/tmp/work", "/tmp/tests"


_LIBC = None


def _libc():
    """libc through ctypes, loaded once per server (each job's processes inherit it)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _mount(libc, source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _isolate_filesystem(spec: dict) -> None:
    """Private, mostly read-only view of the host; the two working directories on a fresh tmpfs."""
    libc = _libc()
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
    for path in spec.get("hidden", []):  # site-packages: data files there (HumanEval's solutions) stay unread
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=0555")
    for workdir, uid in ((PROGRAM_DIR, spec["uid"]), (TESTS_DIR, spec["uid"] + 1)):
        os.mkdir(workdir, 0o700)
        os.chown(workdir, uid, uid)


def _drop_privileges(spec: dict, uid: int, workdir: str) -> None:
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
    os.setgid(uid)
    os.setuid(uid)  # all uids non-zero: the kernel clears every capability
    libc = _libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    # the uid change cleared the parent-death signal: arm it again (the server's uid sweep covers the gap)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()  # its own session and process group: kill(0, ...) reaches nothing but itself
    os.chdir(workdir)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": "/tmp", "LANG": "C.UTF-8"})


class _TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so `except Exception` in the program does not swallow it."""


class _Boundary(BaseException):
    """A call across the boundary failed in a way that is a verdict of its own (reason: early_exit, timeout,
    not_serializable, tampered, output_limit). A BaseException: test code's `except Exception` cannot hide it."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    import errno
    if isinstance(exc, _Boundary):
        return exc.reason
    if isinstance(exc, AssertionError):
        return "wrong_answer"
    if isinstance(exc, _TestTimeout):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, SystemExit):
        return "early_exit"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "output_limit"
    return "runtime_error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- the program process -----------------------------------------------------------------------------------


class _Integrity:
    """Snapshots of what a program must not change, taken in the server before any job (every program process
    starts from that state); `changes` says what a program changed."""

    def __init__(self):
        import builtins
        import signal
        self.signal, self.on_alarm = signal, None
        self.builtins = builtins.__dict__
        self.builtins_copy = dict(self.builtins)
        self.hooks = self._hooks()
        self.modules = {name: (m.__dict__, dict(m.__dict__)) for name, m in list(sys.modules.items())
                        if name in PRELOADED or name in ("json", "os", "signal", "__main__")}

    def _hooks(self) -> tuple:
        threading = sys.modules.get("threading")
        return (sys.excepthook, sys.displayhook, sys.unraisablehook, sys.breakpointhook, sys.gettrace(),
                sys.getprofile(), getattr(threading, "_trace_hook", None), getattr(threading, "_profile_hook", None),
                sys.path, tuple(sys.path), sys.meta_path, tuple(sys.meta_path), tuple(sys.path_hooks), sys.modules)

    HOOK_NAMES = ("sys.excepthook", "sys.displayhook", "sys.unraisablehook", "sys.breakpointhook", "sys.settrace",
                  "sys.setprofile", "threading.settrace", "threading.setprofile", "sys.path", "sys.path",
                  "sys.meta_path", "sys.meta_path", "sys.path_hooks", "sys.modules")

    def changes(self, full: bool) -> list[str]:
        found = [name for name, a, b in zip(self.HOOK_NAMES, self.hooks, self._hooks()) if a is not b and a != b]
        if self.signal.getsignal(self.signal.SIGALRM) is not self.on_alarm:
            found.append("the SIGALRM handler (the harness's timeouts)")
        found += [f"builtins.{k}" for k, v in self.builtins_copy.items() if self.builtins.get(k, _MISSING) is not v]
        found += [f"builtins.{k} (added)" for k in self.builtins.keys() - self.builtins_copy.keys()]
        if full:
            for name, (live, copy) in self.modules.items():
                found += [f"{name}.{k}" for k, v in copy.items() if live.get(k, _MISSING) is not v]
        return sorted(set(found))


_MISSING = object()
_INTEGRITY: _Integrity | None = None  # set by the server (_serve) once its imports are done


def _exception_name(exc: BaseException) -> str:
    import builtins
    for cls in type(exc).__mro__:  # the nearest builtin exception type: test code can catch what it expects
        if getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


def _program_process(spec: dict, calls_fd: int, replies_fd: int) -> None:
    """Load the program, then answer the test process: get a global, call a function, finish. Whatever this
    process sends is untrusted: the test process checks every reply."""
    import signal
    budget = spec["limits"]["test_timeout_s"]

    def on_alarm(signum, frame):
        raise _TestTimeout(f"exceeded {budget} s")

    def send(obj: dict) -> None:
        _write_all(replies_fd, (json.dumps(obj) + "\n").encode())

    signal.signal(signal.SIGALRM, on_alarm)
    integrity = _INTEGRITY or _Integrity()
    integrity.on_alarm = on_alarm
    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    try:
        code = compile(spec["program"], "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        return send({"error": "syntax_error", "detail": f"program: {_describe(e)}"})
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        exec(code, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as e:  # noqa: BLE001 - everything the program raises is a verdict
        signal.setitimer(signal.ITIMER_REAL, 0)
        return send({"error": _reason(e), "detail": f"program: {_describe(e)}"})
    changed = integrity.changes(full=False)  # the stdlib and harness modules are checked at `finish`
    if changed:
        return send({"error": "tampered", "detail": "the program changed " + ", ".join(changed)[:400]})

    def describe(name: str) -> dict:
        value = namespace.get(name, _MISSING)
        if value is _MISSING:
            return {"kind": "missing"}
        if type(value) is type(sys):
            return {"kind": "module", "module": value.__name__}
        if callable(value):
            return {"kind": "callable"}
        try:
            return {"kind": "value", "value": _encode(value)}
        except _NotSerializable as e:
            return {"error": "not_serializable", "detail": f"{name}: {e}"}

    def call(name: str, args, kwargs, deadline: float) -> dict:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, deadline))
            result = {"value": _encode(namespace[name](*_decode(args), **_decode(kwargs)))}
            signal.setitimer(signal.ITIMER_REAL, 0)
            return result
        except _NotSerializable as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return {"error": "not_serializable", "detail": f"{name} returned {e}"}
        except _TestTimeout as e:
            return {"error": "timeout", "detail": f"{name}: call {e}"}
        except SystemExit as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return {"error": "early_exit", "detail": f"{name} raised SystemExit({e})"}
        except BaseException as e:  # noqa: BLE001 - the candidate raised: the test decides what that means
            signal.setitimer(signal.ITIMER_REAL, 0)
            return {"raised": _exception_name(e), "message": str(e)[:500],
                    "errno": getattr(e, "errno", None) if isinstance(e, OSError) else None}

    send({"ready": True, "names": {name: describe(name) for name in spec["names"]}})
    reader = os.fdopen(calls_fd, "rb", buffering=1 << 16)
    while line := reader.readline():
        msg = json.loads(line)
        reply: dict = {"id": msg["id"]}
        if msg["op"] == "get":
            reply.update(describe(msg["name"]))
        elif msg["op"] == "call":
            reply.update(call(msg["name"], msg["args"], msg["kwargs"], msg["deadline"]))
        elif msg["op"] == "batch":
            results = []
            for name, args, kwargs in msg["calls"]:
                result = call(name, args, kwargs, msg["deadline"])
                if len(json.dumps(result)) > MAX_REPLY_BYTES // 16:
                    result = {"deferred": True}  # a big value travels alone, when the test asks for it
                results.append(result)
                if integrity.changes(full=False):
                    break
            reply["results"] = results
        changed = integrity.changes(full=msg["op"] == "finish")
        if changed:
            reply = {"id": msg["id"], "error": "tampered", "detail": "the program changed " + ", ".join(changed)[:400]}
        send(reply)
        if msg["op"] == "finish":
            os.close(replies_fd)  # the end of the channel now, not when this process has been torn down
            break


# --- the test process --------------------------------------------------------------------------------------


class _Channel:
    """The test process's side of the call pipe. Every reply is checked: it must be one JSON line answering the
    call just made, with a value that decodes to plain builtin data."""

    def __init__(self, calls_fd: int, replies_fd: int):
        self.calls_fd = calls_fd
        self.replies = os.fdopen(replies_fd, "rb", buffering=1 << 16)
        self.next_id = 0
        self.broken: _Boundary | None = None   # once set, every later request fails the same way
        self.violations: list[_Boundary] = []  # boundary failures during the current test (even if swallowed)
        self.batch: tuple[int, list, float] | None = None  # (id, calls, seconds allowed) of an unread batch
        self.prefetched: dict[str, list[dict]] = {}       # call key -> answers not yet used, in order

    def fail(self, reason: str, detail: str, sticky: bool = True) -> _Boundary:
        err = _Boundary(reason, detail)
        if sticky:
            self.broken = err
        self.violations.append(err)
        return err

    def read(self) -> dict:
        try:
            line = self.replies.readline(MAX_REPLY_BYTES + 1)
        except _TestTimeout:
            self.broken = _Boundary("timeout", "the program is still busy with an earlier call")
            self.violations.append(_Boundary("timeout", "the program did not answer in time"))
            raise
        if not line:
            raise self.fail("program_gone", "the program process ended")
        if len(line) > MAX_REPLY_BYTES:
            raise self.fail("output_limit", f"a reply over {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise self.fail("tampered", f"the call channel carried something that is not a reply ({e})") from None
        if type(reply) is not dict:
            raise self.fail("tampered", "the call channel carried something that is not a reply")
        return reply

    def send_batch(self, calls: list, budget: float) -> None:
        """Ask for every literal call at once; the answers are read later (`read_batch`), while the tests'
        setup runs here. Each call gets the per-test budget in the program."""
        if not calls:
            return
        msg = {"op": "batch", "calls": calls, "deadline": budget, "id": self.next_id}
        self.next_id += 1
        try:
            _write_all(self.calls_fd, (json.dumps(msg) + "\n").encode())
        except BrokenPipeError:
            return  # the next request says so
        self.batch = (msg["id"], calls, budget * (len(calls) + 1))

    def read_batch(self) -> None:
        import signal
        if self.batch is None:
            return
        batch_id, calls, allowed = self.batch
        self.batch = None
        before = signal.setitimer(signal.ITIMER_REAL, allowed)[0]
        try:
            reply = self.read()
        finally:
            signal.setitimer(signal.ITIMER_REAL, before)
        self.violations = []  # a failure here belongs to no test; it is sticky, so every test still sees it
        if reply.get("id") != batch_id:
            raise self.fail("tampered", f"a reply to call {reply.get('id')!r} came for call {batch_id}")
        if "error" in reply:
            self.check(reply)
        results = reply.get("results")
        if type(results) is not list or len(results) > len(calls) or not all(type(r) is dict for r in results):
            raise self.fail("tampered", "a batch reply that does not answer the batch")
        for (name, args, kwargs), result in zip(calls, results):
            self.prefetched.setdefault(json.dumps([name, args, kwargs]), []).append(result)

    def check(self, reply: dict) -> None:
        if "error" in reply:
            reason = reply["error"] if reply["error"] in REASONS else "tampered"
            raise self.fail(reason, str(reply.get("detail"))[:500], sticky=reason in ("tampered", "early_exit"))

    def request(self, msg: dict) -> dict:
        if self.batch is not None:
            self.read_batch()
        if self.broken is not None:
            self.violations.append(self.broken)
            raise _Boundary(self.broken.reason, str(self.broken))
        msg["id"] = self.next_id
        self.next_id += 1
        try:
            _write_all(self.calls_fd, (json.dumps(msg) + "\n").encode())
        except BrokenPipeError:
            raise self.fail("program_gone", "the program process ended") from None
        reply = self.read()
        if reply.get("id") != msg["id"]:
            raise self.fail("tampered", f"a reply to call {reply.get('id')!r} came for call {msg['id']}")
        self.check(reply)
        return reply

    def expect_end(self) -> None:
        """After `finish` the program process exits: anything still on the channel was written by the program
        itself (replies forged ahead of the calls push the genuine ones back: they are left over here)."""
        line = self.replies.readline(200)
        if line:
            raise self.fail("tampered", f"the call channel carried more replies than calls: {line[:80]!r}")

    def value(self, reply: dict):
        try:
            return _parse_value(reply.get("value"))
        except _Malformed as e:
            raise self.fail("tampered", f"a reply value that is not plain data ({e})") from None

    def call(self, name: str, args: tuple, kwargs: dict, budget: float):
        import builtins
        import signal
        try:
            payload = {"op": "call", "name": name, "args": _encode(list(args)), "kwargs": _encode(dict(kwargs))}
        except _NotSerializable as e:
            raise self.fail("not_serializable", f"an argument to {name}: {e}", sticky=False) from None
        answers = self.prefetched.get(json.dumps([name, payload["args"], payload["kwargs"]]))
        reply = answers.pop(0) if answers else {"deferred": True}
        if self.broken is None and not reply.get("deferred"):
            self.check(reply)
        else:
            remaining = signal.getitimer(signal.ITIMER_REAL)[0] or budget
            payload["deadline"] = max(0.001, remaining - 0.05)  # the program's own alarm fires first
            reply = self.request(payload)
        if "raised" in reply:
            exc_type = getattr(builtins, str(reply["raised"]), None)
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)) or \
                    issubclass(exc_type, (SystemExit, KeyboardInterrupt, GeneratorExit)):
                exc_type = Exception
            exc = exc_type(str(reply.get("message")))
            if isinstance(exc, OSError) and type(reply.get("errno")) is int:
                exc.errno = reply["errno"]
            raise exc
        return self.value(reply)

    def resolve(self, name: str, namespace: dict, budget: float, known: dict) -> None:
        """Bind a name the tests use that the program defines: a stub for a callable, the test process's own
        copy of a module, or the value itself (asked for again before each test that uses it: calls may change
        it). `known`: what the program said of each name when it was loaded."""
        import importlib
        reply = known.get(name)
        if type(reply) is not dict or "error" in reply or reply.get("kind") == "value":
            reply = self.request({"op": "get", "name": name})
        kind = reply.get("kind")
        if kind == "callable":
            def stub(*args, **kwargs):
                return self.call(name, args, kwargs, budget)
            stub.__name__ = stub.__qualname__ = name
            namespace[name] = stub
        elif kind == "module":
            try:
                namespace[name] = importlib.import_module(str(reply.get("module")))
            except ImportError:
                pass
        elif kind == "value":
            namespace[name] = self.value(reply)
        elif kind != "missing":
            raise self.fail("tampered", f"an answer of unknown kind {kind!r}")


def _tests_process(spec: dict, payload: dict, channel: _Channel, emit) -> None:
    """Context, setup, then each test with its own alarm; one verdict line per test. No candidate code runs here:
    the program is reached only through `channel`."""
    import signal
    budget = spec["limits"]["test_timeout_s"]

    def on_alarm(signum, frame):
        raise _TestTimeout(f"test exceeded {budget} s")

    signal.signal(signal.SIGALRM, on_alarm)
    try:  # the program's first message: loaded, or why not (no alarm: a hang here is the wall clock's)
        first = channel.read()
    except _Boundary as e:
        return emit({"event": "program_error", "reason": e.reason, "error": str(e)})
    if "error" in first:
        reason = first["error"] if first["error"] in REASONS else "tampered"
        return emit({"event": "program_error", "reason": reason, "error": str(first.get("detail"))[:500]})
    known = first.get("names")
    if first.get("ready") is not True or type(known) is not dict:
        return emit({"event": "program_error", "reason": "tampered", "error": "the program process sent "
                                                                              "something other than ready"})
    channel.send_batch([c for c in payload["prefetch"] if type(known.get(c[0])) is dict
                        and known[c[0]].get("kind") == "callable"], budget)
    namespace = {"__name__": "__tests__", "__builtins__": __builtins__}
    for label, source, names in (("context", payload["context"], []),
                                 ("setup", payload["setup"], payload["setup_names"])):
        try:
            signal.setitimer(signal.ITIMER_REAL, budget)
            for name in names:
                channel.resolve(name, namespace, budget, known)
            exec(compile(source, f"{label}.py", "exec"), namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as e:  # noqa: BLE001
            signal.setitimer(signal.ITIMER_REAL, 0)
            reason = "syntax_error" if isinstance(e, SyntaxError) else _reason(e)
            return emit({"event": "program_error", "reason": reason, "error": f"{label}: {_describe(e)}"})
    try:
        channel.read_batch()
    except BaseException:  # noqa: BLE001 - sticky: every test that calls the program fails with it
        pass
    for i, (test, names) in enumerate(zip(payload["tests"], payload["test_names"])):
        channel.violations = []
        try:
            signal.setitimer(signal.ITIMER_REAL, budget)
            for name in names:
                channel.resolve(name, namespace, budget, known)
            exec(compile(test, f"test_{i}.py", "exec"), namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
            verdict = {"event": "test", "i": i, "ok": True, "reason": "passed"}
        except BaseException as e:  # noqa: BLE001
            signal.setitimer(signal.ITIMER_REAL, 0)
            verdict = {"event": "test", "i": i, "ok": False, "reason": _reason(e), "error": _describe(e)}
        if channel.violations:  # the test swallowed a boundary failure: it still fails, with that reason
            v = channel.violations[0]
            verdict.update(ok=False, reason=v.reason, error=_describe(v))
        emit(verdict)
        if channel.violations and channel.violations[0].reason == "tampered":
            break
    try:
        signal.setitimer(signal.ITIMER_REAL, min(budget, 2.0))
        channel.request({"op": "finish"})
        channel.expect_end()
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException:  # noqa: BLE001 - a tamper report is recorded below; a gone program changes nothing
        signal.setitimer(signal.ITIMER_REAL, 0)
    tampered = next((v for v in channel.violations if v.reason == "tampered"), None)
    if tampered is None and channel.broken is not None and channel.broken.reason == "tampered":
        tampered = channel.broken
    if tampered is not None:
        emit({"event": "tampered", "error": str(tampered)})


# --- the harness: init of the job's pid namespace --------------------------------------------------------


CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
MS_PRIVATE, MS_NOEXEC = 1 << 18, 8
PR_SET_PDEATHSIG = 1


def _job_tree(spec: dict, out: int, err: int, res: int) -> None:
    """Runs in a fork of the server: new mount/pid/IPC namespaces; the harness is the new pid namespace's init,
    so when it exits the kernel kills everything left behind (daemons, fork bombs)."""
    import ctypes
    import signal
    libc = _libc()
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
            code = _harness(spec, out, err, res)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.waitstatus_to_exitcode(status) != 0:
        _emit_to(res, {"event": "exit", "how": _how(status)})


def _how(status: int) -> str:
    return f"exit {os.waitstatus_to_exitcode(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"


def _emit_to(fd: int, event: dict) -> None:
    os.write(fd, (json.dumps(event) + "\n").encode())


def _remap(fds: list[int]) -> None:
    """Make fds 0.. exactly `fds` and close everything else (before any untrusted code runs)."""
    import fcntl
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]  # out of the way of every target first
    for target, fd in enumerate(moved):
        os.dup2(fd, target)
    # the server's pipes, memfds and the other side's ends are not ours; /proc/self/fd lists what is open (a
    # closerange over every possible number costs a syscall each)
    for name in os.listdir("/proc/self/fd"):
        if int(name) >= len(fds):
            try:
                os.close(int(name))
            except OSError:
                pass  # the listing's own fd, already gone


def _harness(spec: dict, out: int, err: int, res: int) -> int:
    """Isolate the filesystem, fork the program process, then become the test process; report how both ended.
    This process is init of the job's pid namespace: when it exits, everything left in the namespace dies."""
    import select
    try:
        tests_fd = os.open(spec["tests_path"], os.O_RDONLY | os.O_CLOEXEC)  # opened, never read, before the fork
        _isolate_filesystem(spec)
        devnull = os.open("/dev/null", os.O_RDWR)
        calls_r, calls_w = os.pipe()
        replies_r, replies_w = os.pipe()
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises SandboxUnavailable
        _emit_to(res, {"event": "infra_error", "error": _describe(e)})
        return 1
    program_pid = os.fork()
    if program_pid == 0:  # 0 /dev/null, 1 stdout, 2 stderr, 3 calls in, 4 replies out
        code = 70
        try:
            _remap([devnull, out, err, calls_r, replies_w])
            _drop_privileges(spec, spec["uid"], PROGRAM_DIR)
            _program_process(spec, 3, 4)
            code = 0
        finally:
            try:
                sys.stdout.flush(), sys.stderr.flush()
            except BaseException:  # noqa: BLE001 - e.g. EFBIG on a full stdout
                pass
            os._exit(code)
    # the test process: 0-2 /dev/null, 3 calls out, 4 replies in, 5 the tests, 6 the verdicts, 7 the program
    program_fd = os.pidfd_open(program_pid)
    _remap([devnull, devnull, devnull, calls_w, replies_r, tests_fd, res, program_fd])
    try:
        _drop_privileges(spec, spec["uid"] + 1, TESTS_DIR)
        with os.fdopen(5, "rb") as f:
            payload = json.loads(f.read())
        _tests_process(spec, payload, _Channel(3, 4), lambda event: _emit_to(6, event))
    except Exception as e:  # noqa: BLE001 - no test code raises this far: a harness failure
        _emit_to(6, {"event": "infra_error", "error": f"test process: {_describe(e)}"})
        return 1
    os.close(3)  # end of calls: a program still waiting for one exits
    poller = select.poll()
    poller.register(7, select.POLLIN)
    ended = bool(poller.poll(200))
    how = _how(os.waitpid(program_pid, 0)[1]) if ended else "killed after the tests"
    _emit_to(6, {"event": "program_exit", "how": how})
    _emit_to(6, {"event": "exit", "how": "exit 0"})
    return 0


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
        _kill_uid(spec["uid"] + 1)
    os.close(pidfd)
    seconds = time.perf_counter() - t0
    events = []
    for line in _read_all(res, 1 << 22).decode("utf-8", "replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass  # only the harness and the test process write here
    tails = [_read_all(fd, lim["tail_bytes"]).decode("utf-8", "replace") for fd in (out, err)]
    for fd in (out, err, res):
        os.close(fd)
    infra = next((e["error"] for e in events if e.get("event") == "infra_error"), None)
    return {"events": events, "killed": killed, "seconds": round(seconds, 4), "stdout_tail": tails[0],
            "stderr_tail": tails[1], "infra_error": infra}


def _serve() -> None:
    """Server loop: read a length-prefixed job, run it, write the length-prefixed reply; until stdin closes."""
    import ctypes  # noqa: F401 - imported once here, not in every forked job
    import fcntl  # noqa: F401
    import gc
    import importlib
    import resource  # noqa: F401
    import select  # noqa: F401
    global _INTEGRITY
    for name in PRELOADED:
        importlib.import_module(name)
    _libc()
    _INTEGRITY = _Integrity()
    if "__main__" in _INTEGRITY.modules:  # the snapshot was taken before this very assignment
        _INTEGRITY.modules["__main__"][1]["_INTEGRITY"] = _INTEGRITY
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
