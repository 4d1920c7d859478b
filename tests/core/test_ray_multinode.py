"""A real two-node Ray cluster on one machine: a head and a worker node, each its own `ray start` process with its
own CPU and a custom resource, then build_pairs with `executor: {name: ray, address: ...}` (no Prefect), in a
driver process of its own as a user's run is (see _in_fresh_driver).

Ray's own task records (ray.util.state.list_tasks, served by the head's dashboard) show that the batch tasks ran
on both nodes, and the manifest's batch_nodes (node ids the BatchResults carry) says the same; the pairs,
candidates, scores and drops equal a local run's (floats to RAY_FLOAT_RTOL: a Ray worker runs torch on one
thread, which changes the summation order of the log-probs in the last digits). Both nodes are stopped by the
ids of the processes this test started (`ray stop` would stop every Ray node of the machine, other users' too).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from pipelines.pairs.build import run_local  # noqa: E402
from pipelines.pairs.config import BuildConfig  # noqa: E402
from tests.helpers import RAY_FLOAT_RTOL  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ip() -> str:
    from ray._private.services import get_node_ip_address
    return get_node_ip_address()  # what Ray makes of 127.0.0.1 anyway (it resolves localhost to this address)


def _node_args(resources: dict, ports: list[int]) -> list[str]:
    """One CPU, a small object store, and explicit ports: another Ray instance on this machine keeps its own."""
    node_manager, object_manager, metrics, agent_http, agent_grpc, runtime_env = ports
    return ["--num-cpus", "1", "--resources", json.dumps(resources), "--object-store-memory", str(100 << 20),
            "--node-ip-address", _node_ip(), "--node-manager-port", str(node_manager),
            "--object-manager-port", str(object_manager), "--metrics-export-port", str(metrics),
            "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(runtime_env), "--disable-usage-stats", "--block"]


def _stop(proc: subprocess.Popen) -> None:
    """Stop one `ray start --block` and every process it started: SIGINT lets it kill its node's processes
    (SIGTERM would skip that), then anything still alive of that process tree is killed by id."""
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] \
        if proc.poll() is None else [proc.pid]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for pid in tree:
        try:
            p = psutil.Process(pid)
            p.kill()
            p.wait(5)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    gcs, dashboard, client, *ports = _free_ports(15)
    # no token authentication: a token left in ~/.ray by another cluster of this machine would switch it on
    auth_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    logs = open(Path(temp) / "nodes.log", "w")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--port", str(gcs), "--temp-dir", temp, "--include-dashboard", "true",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
         *_node_args({"head": 1}, ports[:6])], env=env, stdout=logs, stderr=subprocess.STDOUT)
    procs = [head]
    try:
        address = f"{_node_ip()}:{gcs}"
        _wait(lambda: _nodes(address) >= 1, head, temp)
        worker = subprocess.Popen(["ray", "start", "--address", address, *_node_args({"worker": 1}, ports[6:12])],
                                  env=env, stdout=logs, stderr=subprocess.STDOUT)
        procs.append(worker)
        _wait(lambda: _nodes(address) >= 2, worker, temp)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        logs.close()
        if auth_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before


LAST_ERROR = [""]


def _nodes(address: str) -> int:
    """Alive nodes, asked by a separate driver (this process connects only for the build)."""
    out = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, log_to_driver=False); "
                          "print(sum(n['Alive'] for n in ray.nodes()))" % address], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    if out.returncode != 0 or not out.stdout.strip():
        LAST_ERROR[0] = out.stderr[-2000:]
        return 0
    return int(out.stdout.strip().splitlines()[-1])


def _wait(ready, proc: subprocess.Popen, temp: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, (Path(temp) / "nodes.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"the Ray node did not come up; last driver error:\n{LAST_ERROR[0]}"
        time.sleep(1)


def _config(out, **kw) -> BuildConfig:
    data = {"output_dir": str(out), "prompts": {"limit": 6}, "batch_size": 1,
            "sampler": {"k": 2, "max_new_tokens": 12, "temperature": 0.9, "batch_prompts": 1},
            "selection": {"rule": "mu_2sigma"}}  # pairs from 2 short answers (verified needs a right and a wrong one)
    return BuildConfig.model_validate({**data, **kw})


def _in_fresh_driver(code: str) -> dict:
    """Run code (which prints one JSON line last) in a new Python process: a driver of its own. This process may
    have run a local Ray instance already (tests/core/test_executors.py does, then ray.shutdown()); a second
    ray.init in the same process, to another cluster, made the tasks on the second node fail with OwnerDiedError
    (the ray.put object's owner, this driver, looked dead to them): Ray's re-init after shutdown, not the build.
    A user's run is a process of its own anyway (`python -m flows.build_pairs ... --executor.address`)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1500, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0"))
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


BUILD_ON_RAY = """
import json
from pipelines.pairs.build import run_local
from pipelines.pairs.config import BuildConfig
summary = run_local(BuildConfig.model_validate(json.loads(%r)))
print(json.dumps({k: summary[k] for k in ("run_dir", "engine_calls", "batches", "batch_nodes", "counts")}, default=str))
"""

RAY_RECORDS = """
import json, time
import ray
from ray.util.state import list_tasks
ray.init(address=%r, log_to_driver=False)
nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
for _ in range(30):  # task events reach the head's state API a moment after the tasks end
    tasks = [t.node_id for t in list_tasks(filters=[("func_or_class_name", "=", "_process_quietly")], detail=True,
                                          limit=1000) if t.state == "FINISHED"]
    if len(tasks) >= 6:
        break
    time.sleep(1)
ray.shutdown()
print(json.dumps({"nodes": nodes, "task_nodes": tasks}))
"""


@pytest.mark.timeout(1800)
def test_batches_run_on_both_nodes_and_give_the_local_pairs(tmp_path, cluster, smollm_dir):
    local = run_local(_config(tmp_path / "local", run_id="local"))
    ray_config = _config(tmp_path / "ray", run_id="ray", executor={
        "name": "ray", "address": cluster, "task_resources": {"scheduling_strategy": "SPREAD"}})
    on_ray = _in_fresh_driver(BUILD_ON_RAY % ray_config.model_dump_json())
    assert on_ray["engine_calls"] == {"sample": 6} and on_ray["batches"]["total"] == 6

    records = _in_fresh_driver(RAY_RECORDS % cluster)
    nodes, task_nodes = records["nodes"], records["task_nodes"]
    assert len(nodes) == 2 and sorted("head" in r for r in nodes.values()) == [False, True]
    ran_on = set(task_nodes)
    assert len(task_nodes) == 6 and ran_on == set(nodes), f"tasks ran on {ran_on}, nodes {set(nodes)}"
    by_node = {node: task_nodes.count(node) for node in nodes}
    assert on_ray["batch_nodes"] == by_node  # the manifest agrees with Ray's own records

    for name in ("pairs", "candidates", "scores", "drops"):
        a = pd.read_parquet(f"{local['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        b = pd.read_parquet(f"{on_ray['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, rtol=RAY_FLOAT_RTOL)
    assert on_ray["counts"] == local["counts"] and on_ray["counts"]["pairs"] > 0
