"""What every benchmark records beside its table in RESULTS.md: benchmarks/results/<name>.json.

    run = record.Run("sampling-transformers")    # at the start: the load average before, the command
    ...                                          # the measurement
    run.write(figures)                           # machine, load average before and after, figures -> the JSON

A figure taken on a loaded machine is not the figure of the code: the load averages say which it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU model and count, memory, OS, Python, and the GPU if torch is already imported and sees one."""
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    info.update(memory_facts())
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def memory_facts() -> dict:
    """What decides the cost of a first touch of memory: the kernel's transparent-huge-page mode, and whether a
    virtio balloon reports free pages to the hypervisor (VIRTIO_BALLOON_F_REPORTING, feature bit 5): then memory a
    process freed more than ~2 s ago goes back to the host, and the next 2 MB page made of it costs a host fault
    (benchmarks/RESULTS.md, "Selection": 0.34-0.56 s instead of 0.044 s to fill 256 MiB of huge pages)."""
    facts = {}
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        facts["transparent_hugepage"] = mode[mode.index("[") + 1:mode.index("]")]
    except (OSError, ValueError):
        pass
    for device in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            if int((device / "device").read_text(), 16) == 5:  # the balloon
                facts["free_page_reporting"] = (device / "features").read_text()[5] == "1"
        except (OSError, ValueError, IndexError):
            pass
    return facts


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() + ("+changes" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    """One benchmark run: started when made (load average before), written once with its figures."""

    def __init__(self, name: str, out: str | None = None):
        self.name, self.out = name, out
        self.command = " ".join(["python", *sys.argv])
        self.started = dt.datetime.now().isoformat(timespec="seconds")
        self.load_before = [round(x, 2) for x in os.getloadavg()]

    def write(self, figures: dict, name: str | None = None, **extra) -> Path:
        """figures (and extra top-level keys) -> out, or benchmarks/results/<name>.json (name: the one given at
        the start unless a later one, e.g. with the device in it, is given here)."""
        self.name = name or self.name
        self.path = Path(self.out) if self.out else RESULTS / f"{self.name}.json"
        record = {"benchmark": self.name, "command": self.command, "date": self.started, "git_commit": git_commit(),
                  "machine": machine(),
                  "load_average": {"before": self.load_before, "after": [round(x, 2) for x in os.getloadavg()],
                                   "cpus": os.cpu_count()},
                  **extra, "figures": figures}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"results: {self.path} (load average {self.load_before[0]} before, "
              f"{record['load_average']['after'][0]} after, {os.cpu_count()} CPUs)")
        return self.path
