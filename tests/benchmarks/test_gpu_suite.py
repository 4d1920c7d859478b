"""The GPU suite's CPU smoke mode: every figure's script runs end to end with tiny random-weight models and
writes its JSON; the suite's summary says what ran. (The GPU run itself needs a GPU machine.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bundle_list_names_importable_modules():
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_suite
    # every wheel the bundle carries is a package pairsmith's figures import here
    missing = [name for _, name in gpu_suite.WHEELS if importlib.util.find_spec(name) is None]
    assert missing == []


@pytest.mark.slow
def test_gpu_suite_smoke_runs_every_figure(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "run", "--smoke", "--results", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert [f["figure"] for f in suite["figures"]] == ["build", "training", "sampling", "scoring", "ches"]
    assert all(f["status"] == "ok" for f in suite["figures"]), suite["figures"]
    for name in ("build", "training", "sampling", "scoring", "ches"):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert {"command", "machine", "load_average", "figures"} <= set(record)
    build = json.loads((tmp_path / "build.json").read_text())["figures"]
    assert build["counts"]["prompts_loaded"] == build["prompts"] == 4
    training = json.loads((tmp_path / "training.json").read_text())["figures"]
    assert training["steps"] == 4 and training["steps_per_s"] > 0
    sampling = json.loads((tmp_path / "sampling.json").read_text())["figures"]
    assert sampling["pipeline_samples"] == sampling["raw_samples"] == 4
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool brings back
