"""kill -9 in the middle of sampling under Prefect, then the same command again: no finished batch is sampled
again, and the output is the same as a run never interrupted (tests/pairs/test_resume.py does this for --no-prefect).

Two ways Prefect can run: the temporary local API a flow starts when no PREFECT_API_URL is set (it lives in a
child process of the run: the kill takes the whole process group, as a crash of the machine's job would), and a
running `prefect server start` that the run reports to (PREFECT_API_URL). The reference run is `--no-prefect`:
both paths must write the same files. Real CLI runs on the embedded model, tiny settings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# mu_2sigma: the resumed run's pairs are compared with the uninterrupted run's, and 2 answers of 8 tokens are
# rarely one right and one wrong, which the default rule (verified) needs for a pair
TINY_ARGS = ["--prompts.limit", "6", "--batch_size", "2", "--sampler.k", "2", "--sampler.max_new_tokens", "8",
             "--selection.rule", "mu_2sigma"]
BATCHES = 3


def _env(**extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _cli(out: Path, run_id: str, env: dict, prefect: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.build_pairs", *([] if prefect else ["--no-prefect"]), "--output_dir",
           str(out), "--run_id", run_id, *TINY_ARGS]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _shards(out: Path) -> list[Path]:
    return sorted((out / ".cache" / "sample").glob("*.candidates.parquet"))


def _manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / run_id / "manifest.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, smollm_dir) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    _finish(_cli(out, "whole", _env(), prefect=False))
    manifest = _manifest(out, "whole")
    assert manifest["engine_calls"] == {"sample": BATCHES}
    return manifest


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """PREFECT_API_URL of a fresh `prefect server start` on 127.0.0.1 (own PREFECT_HOME)."""
    import httpx
    home = tmp_path_factory.mktemp("prefect-server-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(PREFECT_HOME=str(home), PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn children, started by this fixture
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _kill_mid_sampling_then_rerun(out: Path, env: dict, uninterrupted: dict) -> dict:
    proc = _cli(out, "crashy", env)
    deadline = time.monotonic() + 900
    while not _shards(out):  # the first batch's candidates shard marks it finished
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "no batch finished in 900 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and whatever it started (the temporary API)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(_shards(out))
    assert 1 <= finished < BATCHES, f"{finished} of {BATCHES} batches finished before the kill: nothing to resume"
    assert not (out / "crashy" / "manifest.json").exists() and not (out / "crashy" / "pairs.parquet").exists()

    _finish(_cli(out, "crashy", env))  # the same command again
    manifest = _manifest(out, "crashy")
    assert manifest["batches"] == {"total": BATCHES, "computed": BATCHES - finished, "resumed": finished}
    assert manifest["engine_calls"].get("sample", 0) == BATCHES - finished  # no finished batch was sampled again
    assert len(_shards(out)) == BATCHES
    for name in ("pairs", "candidates", "scores", "drops"):  # the same files as the uninterrupted --no-prefect run
        pd.testing.assert_frame_equal(pd.read_parquet(Path(uninterrupted["run_dir"]) / f"{name}.parquet"),
                                      pd.read_parquet(out / "crashy" / f"{name}.parquet"))
    assert manifest["counts"] == uninterrupted["counts"]
    return manifest


@pytest.mark.timeout(2400)
def test_kill_9_under_the_temporary_prefect_api_then_rerun(tmp_path, uninterrupted):
    env = _env(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    env.pop("PREFECT_API_URL", None)
    _kill_mid_sampling_then_rerun(tmp_path / "runs", env, uninterrupted)


@pytest.mark.timeout(2400)
def test_kill_9_under_a_running_prefect_server_then_rerun(tmp_path, uninterrupted, prefect_server):
    import httpx
    env = _env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "client-home"))
    manifest = _kill_mid_sampling_then_rerun(tmp_path / "runs", env, uninterrupted)
    # both flow runs reached the server: the killed one (never finished) and the rerun (completed)
    runs = httpx.post(f"{prefect_server}/flow_runs/filter", json={}, timeout=30).json()
    states = sorted(r["state_type"] for r in runs if r["flow_id"] and r.get("parameters", {}).get("config", {})
                    .get("run_id") == "crashy")
    assert "COMPLETED" in states and len(states) >= 2, states
    assert manifest["batches"]["resumed"] >= 1
