"""Security suite of the execution sandbox: each attack must be contained, the run must finish with a verdict,
and nothing on the host outside the sandbox's own (private) temp dir may change.

The canary files live in a world-writable directory with world-writable modes, so only the sandbox (read-only
mount, private /tmp, unprivileged uid) stops them from being changed: file permissions alone would not.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from scorers import sandbox
from scorers.sandbox import Job, Limits, run_program

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

FAST = Limits(timeout_s=6.0, test_timeout_s=2.0, cpu_s=4, memory_mb=512, file_mb=4, nproc=16)


@pytest.fixture
def canary(tmp_path_factory):
    """A world-writable directory holding a world-writable file, on the host's real filesystem (not /tmp,
    which the sandbox replaces, so this also checks the read-only root)."""
    base = Path("/var/lib/pairsmith-canary") if os.access("/var/lib", os.W_OK) else tmp_path_factory.mktemp("c")
    base.mkdir(parents=True, exist_ok=True)
    d = Path(base) / f"c{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    d.chmod(0o777)
    f = d / "keep.txt"
    f.write_text("original")
    f.chmod(0o666)
    yield d, f
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    d.rmdir()
    try:
        base.rmdir()  # only when empty (a concurrent session may still use it)
    except OSError:
        pass


def _host_untouched(d: Path, f: Path) -> None:
    assert f.read_text() == "original"
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt"]


def sandbox_processes(grace_s: float = 5.0) -> list[str]:
    """Host pids of processes running as a sandbox uid (none may survive a finished job). SIGKILLed processes
    take a moment to disappear, so this waits up to grace_s for the list to empty."""
    deadline = time.monotonic() + grace_s
    while (found := _sandbox_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _sandbox_pids() -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid >= sandbox.UID_BASE:
                    found.append(p.name)
            except FileNotFoundError:
                pass
    return found


def run(program: str, tests=("assert True_",), limits=FAST):
    return run_program(Job(program, list(tests), setup="True_ = True"), limits)


def test_ordinary_program_passes_and_fails():
    r = run_program(Job("def f(x):\n    return x * 2\n", ["assert f(2) == 4", "assert f(3) == 7", "f(None + 1)"]))
    assert [v.reason for v in r.verdicts] == ["passed", "wrong_answer", "runtime_error"]
    assert {v.reason for v in r.verdicts} <= set(sandbox.REASONS)
    assert r.fraction == pytest.approx(1 / 3)
    assert r.reason == "wrong_answer"


def test_syntax_error_fails_every_test():
    r = run_program(Job("def f(:\n", ["assert f(1)", "assert f(2)"]))
    assert [v.reason for v in r.verdicts] == ["syntax_error", "syntax_error"] and r.passed == 0


def test_fork_bomb_is_contained():
    before = len(os.listdir("/proc"))
    r = run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert r.reason == "timeout" and r.passed == 0
    assert sandbox_processes() == []
    assert len(os.listdir("/proc")) < before + 10  # nothing left behind (other tests may start processes)


def test_memory_bomb_is_contained():
    r = run("x = bytearray(8 * 1024 ** 3)\n")
    assert r.reason == "memory" and "MemoryError" in r.verdicts[0].error


def test_infinite_loop_times_out_per_test_and_the_next_test_still_runs():
    r = run_program(Job("def f():\n    while True:\n        pass\n", ["f()", "assert 1 + 1 == 2"]), FAST)
    assert [v.reason for v in r.verdicts] == ["timeout", "passed"]


def test_busy_loop_ignoring_signals_is_killed_by_the_wall_clock():
    program = ("import signal\nfor s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU):\n"
               "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n")
    t0 = time.perf_counter()
    r = run(program, limits=Limits(timeout_s=3.0, test_timeout_s=1.0, cpu_s=60))
    assert r.reason == "timeout" and r.exit == "killed (wall clock)"
    assert time.perf_counter() - t0 < 15
    assert sandbox_processes() == []  # the uid change clears PDEATHSIG; the server's uid sweep still gets it


def test_cpu_limit_kills_a_busy_loop_before_the_wall_clock():
    program = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    r = run(program, limits=Limits(timeout_s=30.0, test_timeout_s=1.0, cpu_s=1))
    assert r.reason == "timeout" and r.exit.startswith("signal")


def test_writing_outside_the_working_directory_is_refused(canary):
    d, f = canary
    program = (f"import os\nerrors = []\nfor path in [{str(d / 'new.txt')!r}, {str(f)!r}, '/etc/pwned', "
               f"'/tmp/pwned', '/root/pwned', '/dev/shm/pwned']:\n"
               "    try:\n        open(path, 'w').write('pwned')\n    except OSError as e:\n"
               "        errors.append(e.errno)\nopen('local.txt', 'w').write('fine')\n"
               "local = open('local.txt').read()\n")
    host_tmp_before = set(os.listdir("/tmp"))
    # the canary dir, the canary file, /etc and /root (an empty root-owned tmpfs) refuse; /tmp and /dev/shm
    # accept the write, but they are the sandbox's private tmpfs, discarded with it
    r = run(program, tests=["assert len(errors) == 4, errors",
                            "assert local == 'fine'"])  # the tests run in a process of their own: they see values
    assert r.passed == 2, r
    _host_untouched(d, f)
    assert "pwned" not in set(os.listdir("/tmp")) - host_tmp_before
    assert not Path("/etc/pwned").exists() and not Path("/dev/shm/pwned").exists()


def test_deleting_files_via_absolute_paths_is_refused(canary):
    d, f = canary
    program = (f"import os, shutil\nerrors = 0\nfor action in (lambda: os.remove({str(f)!r}), "
               f"lambda: shutil.rmtree({str(d)!r}), lambda: os.remove('/etc/hostname')):\n"
               "    try:\n        action()\n    except OSError:\n        errors += 1\n")
    r = run(program, tests=["assert errors == 3"])
    assert r.passed == 1, r
    _host_untouched(d, f)
    assert Path("/etc/hostname").exists()


def test_parent_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("PAIRSMITH_TEST_SECRET", "hunter2")
    program = ("import os, glob\nseen = dict(os.environ)\nleaks = []\nfor p in glob.glob('/proc/*/environ'):\n"
               "    try:\n        leaks.append(open(p, 'rb').read())\n    except OSError:\n        pass\n")
    r = run(program, tests=["assert 'PAIRSMITH_TEST_SECRET' not in seen, seen",
                            "assert not any(b'hunter2' in x for x in leaks)",
                            "assert sorted(seen) == ['HOME', 'LANG', 'PATH', 'TMPDIR'], seen"])
    assert r.passed == 3, r


def test_network_connections_fail():
    # a listening socket on the host's loopback: reachable from the host, not from the sandbox
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    program = (f"import socket\nerrors = []\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 80)]:\n"
               "    try:\n        socket.create_connection(addr, timeout=1)\n    except OSError as e:\n"
               "        errors.append(type(e).__name__)\n")
    try:
        r = run(program, tests=["assert len(errors) == 2, errors"])
    finally:
        server.close()
    assert r.passed == 1, r


def test_killing_the_parent_process_is_refused():
    # the program's parent is the sandbox's root harness, init of its own pid namespace (pid 1, EPERM); host pids
    # do not exist there (ESRCH), and kill(-1) reaches only the program's own processes
    import errno
    program = (f"import os, signal\nppid = os.getppid()\nresults = []\nfor pid in (ppid, {os.getpid()}, 1, -1):\n"
               "    try:\n        os.kill(pid, signal.SIGKILL)\n        results.append('sent')\n"
               "    except OSError as e:\n        results.append(e.errno)\n")
    r = run(program, tests=[f"assert results[1] == {errno.ESRCH}, results",
                            f"assert ppid == 1 and results[0] == results[2] == {errno.EPERM}, (ppid, results)"])
    assert r.passed == 2, r
    assert os.getpid() > 0 and r.exit == "exit 0"  # we are alive, and so was the sandbox's own reporting


def test_a_gigabyte_of_stdout_is_capped():
    r = run("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
            "sys.stdout.flush()\n")
    assert r.reason == "output_limit", r
    assert len(r.stdout_tail) <= FAST.tail_bytes


def test_background_daemon_does_not_outlive_the_test():
    # classic double fork + setsid: the daemon is reparented to the namespace init, which exits when the test
    # process does, and the kernel then kills everything left in the namespace
    program = ("import os, time\n"
               "pid = os.fork()\n"
               "if pid == 0:\n    os.setsid()\n    if os.fork():\n        os._exit(0)\n"
               "    while True:\n        time.sleep(0.1)\n"
               "os.waitpid(pid, 0)\n")
    r = run(program)
    assert r.passed == 1, r
    assert sandbox_processes() == []


def test_setuid_binaries_do_not_give_root_back():
    program = ("import subprocess\nout = subprocess.run(['su', '-c', 'id -u'], capture_output=True, text=True,"
               " input='').stdout\n")
    r = run(program, tests=["assert '0' != out.strip()"])
    assert r.passed == 1, r


def test_the_pool_runs_many_jobs_in_order():
    jobs = [Job(f"x = {i}", [f"assert x == {i}", "assert x % 2 == 0"]) for i in range(6)]
    results = sandbox.run_programs(jobs, FAST, workers=2)
    assert [r.passed for r in results] == [2 if i % 2 == 0 else 1 for i in range(6)]


def test_sandbox_check_available():
    sandbox.check_available()  # raises with the reason when namespaces are missing
    assert subprocess.run(["unshare", "--version"], capture_output=True).returncode == 0
    assert stat.S_IMODE(os.stat("/tmp").st_mode) & 0o1000  # host /tmp still the host's (sticky, shared)
