"""An output directory that is read-only or full: one line naming the path (exit code 2 from the CLI, no
traceback), and nothing partial under any final name.

The real thing where we can: a tmpfs mounted read-only, or small and filled, in a private mount namespace
(`unshare --mount`, root), so the host sees no mount. The CLI runs stop before any model loads: the output
directory is checked first.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core import io, schema

ROOT = Path(__file__).resolve().parents[2]
needs_mounts = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                  reason="a private mount namespace needs root and util-linux unshare")


def in_private_mount(tmp_path: Path, mount_options: str, command: list[str], fill: bool = False,
                     leave_kb: int = 0) -> subprocess.CompletedProcess:
    """Run `command` with a fresh tmpfs on tmp_path/mnt (only this process tree sees it); optionally filled up
    to `leave_kb` free kilobytes first. The listing of the mount after the command is printed last."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"mount -t tmpfs -o {mount_options} pairsmith-test {mnt}"
    if fill:
        script += (f" && dd if=/dev/zero of={mnt}/fill bs=1k 2>/dev/null;"
                   f" truncate -s -{leave_kb}k {mnt}/fill")
    script += f" && cd {ROOT} && {' '.join(command)}; rc=$?; echo LISTING; find {mnt} -mindepth 1; exit $rc"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=env, timeout=300)


def cli(out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows.build_pairs", "--output_dir", out, "--prompts.limit", "4", *extra]


def listing(proc: subprocess.CompletedProcess) -> list[str]:
    return proc.stdout.split("LISTING\n", 1)[1].split()


@needs_mounts
@pytest.mark.parametrize("prefect", [False, True])
def test_a_read_only_output_dir_is_a_one_line_error(tmp_path, prefect):
    out = f"{tmp_path}/mnt/runs"
    proc = in_private_mount(tmp_path, "ro,size=64k", cli(out, *([] if prefect else ["--no-prefect"])))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: cannot write to {out}: Read-only file system"], proc.stderr[-2000:]
    assert listing(proc) == []


@needs_mounts
def test_a_full_output_dir_is_a_one_line_error(tmp_path):
    out = f"{tmp_path}/mnt/runs"
    proc = in_private_mount(tmp_path, "size=64k", cli(out, "--no-prefect"), fill=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: cannot write to {out}: No space left on device"]
    assert "Traceback" not in proc.stderr + proc.stdout


WRITE_BIG = """
import sys
from pipelines.core import io, schema
df = schema.drop_rows([f"p{i}" for i in range(5000)], "load", "empty_prompt", detail="x" * 200)
try:
    io.write_table(df, sys.argv[1], schema.DROPS)
except io.OutputError as e:
    print("OutputError", e.errno, e.strerror)
"""


@needs_mounts
def test_a_disk_that_fills_during_a_write_leaves_no_partial_file(tmp_path):
    """The directory exists and takes small files (the up-front check passes), then a big table does not fit."""
    target = f"{tmp_path}/mnt/run/drops.parquet"
    (tmp_path / "write_big.py").write_text(WRITE_BIG)
    proc = in_private_mount(tmp_path, "size=256k", [f"mkdir {tmp_path}/mnt/run &&", sys.executable,
                                                    str(tmp_path / "write_big.py"), target], fill=True, leave_kb=32)
    assert f"OutputError {errno.ENOSPC} cannot write {target}: No space left on device" in proc.stdout, proc
    assert sorted(listing(proc)) == [f"{tmp_path}/mnt/fill", f"{tmp_path}/mnt/run"]  # no final file, no temp file


def test_a_failing_rename_names_the_path_and_removes_the_temp_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(os, "replace", refuse)
    target = tmp_path / "run" / "pairs.parquet"
    with pytest.raises(io.OutputError, match=f"cannot write {target}: Permission denied") as caught:
        io.write_json({"a": 1}, target)
    assert caught.value.errno == errno.EACCES
    assert list((tmp_path / "run").iterdir()) == []
    with pytest.raises(io.OutputError, match="cannot write to .*/file: File exists"):  # a file where a dir goes
        (tmp_path / "file").write_text("x")
        io.write_table(schema.empty(schema.DROPS), tmp_path / "file" / "t.parquet", schema.DROPS)
