"""The Prefect UI as a user sees it: a real `prefect server start`, the deployments of flows/deploy.py, a small
build_pairs run, and headless Chromium loading the flow-run page (name, state, progress log) and the run's
report artifact page (summary, inline figures). Screenshots land in the test's tmp dir (and in
$PAIRSMITH_UI_SHOTS when set).

The server is started here on purpose (not the test harness): the UI is only served by `prefect server start`.
Own PREFECT_HOME, a free port on 127.0.0.1, PREFECT_SERVER_API_HOST/PORT as env vars (with `--port` alone the UI
settings still advertise 4200). Chromium: Debian's `chromium` (scripts/install-cpu.sh installs it); the test
is skipped, saying so, when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(api_url, env) of a fresh `prefect server start` on 127.0.0.1."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage")}
    env.pop("PREFECT_PROFILES_PATH", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = env["PREFECT_API_URL"]
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
        yield api, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn children, started by this fixture
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _in_subprocess(code: str, env: dict, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_deployments_take_their_parameter_schema_from_the_pydantic_config(server):
    """flows/deploy.py registers every flow; the API's parameter schema is BuildConfig's and it rejects bad
    values. Applied in a subprocess with the server's PREFECT_API_URL."""
    api, env = server
    out = _in_subprocess("""
import json
from flows.deploy import deployments
from prefect.client.orchestration import get_client

ids = [d.apply() for d in deployments()]  # what prefect.serve registers, without serving
found = {}
with get_client(sync_client=True) as client:
    for i in ids:
        d = client.read_deployment(i)
        bad = json.loads(json.dumps(d.parameters))
        if "sampler" in bad["config"]:
            bad["config"]["sampler"]["k"] = 1
        try:
            client.create_flow_run_from_deployment(d.id, parameters=bad)
            rejected = None
        except Exception as e:
            rejected = str(e)
        found[d.name] = dict(schema=d.parameter_openapi_schema, parameters=d.parameters,
                             schedules=[(s.schedule.cron, s.active) for s in d.schedules],
                             entrypoint=d.entrypoint, enforce=d.enforce_parameter_schema, rejected=rejected)
print("RESULT" + json.dumps(found))
""", env)
    found = json.loads(out.split("RESULT", 1)[1])
    from flows.deploy import FLOWS
    from pipelines.pairs.config import BuildConfig
    assert set(found) == set(FLOWS)
    assert {n: f["entrypoint"] for n, f in found.items()} == {n: f"{e.module}.{e.attr}" for n, e in FLOWS.items()}
    bp = found["build-pairs"]
    assert bp["entrypoint"] == "flows.build_pairs.build_pairs" and bp["enforce"]
    assert bp["schedules"] == [[FLOWS["build-pairs"].cron, False]]  # daily, paused by default
    assert bp["parameters"] == {"config": BuildConfig().model_dump(mode="json")}
    defs = bp["schema"]["definitions"]
    assert bp["schema"]["properties"]["config"]["$ref"] == "#/definitions/BuildConfig"
    # the form's fields are the pydantic model's, with its bounds and choices
    assert set(defs["BuildConfig"]["properties"]) == set(BuildConfig.model_fields)
    assert defs["SamplerConfig"]["properties"]["k"]["minimum"] == 2
    import typing

    from pipelines.core.config import SamplerConfig
    sampler_names = list(typing.get_args(SamplerConfig.model_fields["name"].annotation))
    assert defs["SamplerConfig"]["properties"]["name"]["enum"] == sampler_names
    assert defs["SamplerConfig"]["properties"]["top_p"]["maximum"] == 1.0
    assert "409" in bp["rejected"] and "config.sampler.k" in bp["rejected"]


def report_figures(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "plots").glob("*.png"))


def _chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)


def _page(url: str, tmp: Path, name: str, size: str = "1400,1300") -> tuple[str, Path]:
    """(rendered DOM, screenshot path) of a UI page after its API calls settled (virtual time budget)."""
    # the same window for both: the log list renders only the rows inside the viewport
    view = ["--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw", f"--window-size={size}"]
    dom = _chromium([*view, "--dump-dom", url], tmp / f"profile-{name}-dom").stdout
    (tmp / f"{name}.html").write_text(dom)
    shot = tmp / f"{name}.png"
    _chromium([*view, f"--screenshot={shot}", url], tmp / f"profile-{name}-shot")
    return dom, shot


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-cpu.sh installs it)")
def test_flow_run_page_shows_the_run_and_its_report(server, tmp_path):
    api, env = server
    # mu_2sigma: the report's margin figure needs pairs, and 2 answers of 8 tokens rarely give the default rule
    # (verified) the right and the wrong answer it pairs
    out = subprocess.run([sys.executable, "-m", "flows.build_pairs", "--prompts.limit", "2", "--sampler.k", "2",
                          "--sampler.max_new_tokens", "8", "--selection.rule", "mu_2sigma",
                          "--output_dir", str(tmp_path / "runs"),
                          "--run_id", "ui-test"], env={**env, "HF_HUB_OFFLINE": "1"}, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 5}).json()
    run = next(r for r in runs if r["parameters"]["config"].get("run_id") == "ui-test")
    assert run["state"]["type"] == "COMPLETED"
    arts = httpx.post(f"{api}/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    report = next(a for a in arts if a["key"] == "build-pairs-report")
    assert {a["key"] for a in arts} >= {"build-pairs-report", "build-pairs-progress"}

    base = api.removesuffix("/api")
    # the run page opens on its logs: name, state badge, and the per-batch progress line
    dom, shot = _page(f"{base}/runs/flow-run/{run['id']}", tmp_path, "flow-run")
    assert run["name"] in dom and "Completed" in dom
    assert "batch 1/1 done, 2/2 prompts (100%)" in dom
    assert shot.stat().st_size > 20_000

    # the run's report artifact: the markdown rendered with the figures inline, linked to the run
    dom, shot = _page(f"{base}/artifacts/artifact/{report['id']}", tmp_path, "artifact", size="1400,2400")
    assert "build-pairs-report" in dom and run["name"] in dom
    assert "pairsmith run" in dom and "ui-test" in dom and "Drops by reason" in dom
    images = re.findall(r"<img[^>]*src=\"data:image/png;base64,", dom)
    assert len(images) == len(report_figures(tmp_path / "runs" / "ui-test")) >= 2  # rewards, margins
    assert shot.stat().st_size > 20_000
    if os.environ.get("PAIRSMITH_UI_SHOTS"):  # keep the screenshots (e.g. for docs/); they stay in tmp_path otherwise
        for png in (tmp_path / "flow-run.png", tmp_path / "artifact.png"):
            shutil.copy(png, Path(os.environ["PAIRSMITH_UI_SHOTS"]) / png.name)


def test_deploy_config_files_and_flags(tmp_path):
    """No server: default parameters from a config file, every FLOWS entry importable, bad flags rejected."""
    from flows import deploy
    from pipelines.core.registry import load_object
    from pipelines.pairs.config import BuildConfig
    cfg = tmp_path / "small.yaml"
    cfg.write_text("prompts: {limit: 3}\nsampler: {k: 6}\n")
    params = deploy.default_parameters(deploy.FLOWS["build-pairs"], str(cfg))["config"]
    expected = BuildConfig.model_validate({"prompts": {"limit": 3}, "sampler": {"k": 6}})
    assert params["prompts"]["limit"] == 3 and params["sampler"]["k"] == 6
    assert params["batch_size"] == expected.batch_size  # the default from the sampled-token budget per batch
    assert set(deploy.FLOWS) == {"build-pairs", "build-step-pairs", "train-dpo", "evaluate", "iterate"}
    # prefect.yaml (for `prefect deploy` with a work pool) describes the same five deployments
    spec = yaml.safe_load(open(ROOT / "prefect.yaml"))
    assert {d["name"]: (d["entrypoint"], d["schedules"][0]["cron"]) for d in spec["deployments"]} == \
        {n: (f"{e.module.replace('.', '/')}.py:{e.attr}", e.cron) for n, e in deploy.FLOWS.items()}
    for name, entry in deploy.FLOWS.items():
        assert deploy.default_parameters(entry)["config"] == load_object(entry.config)().model_dump(mode="json")
    # every entrypoint is the module attribute a runner imports (the flows are made in flows.lazy)
    assert [d.entrypoint for d in deploy.deployments()] == [f"{e.module}.{e.attr}" for e in deploy.FLOWS.values()]
    (d,) = deploy.deployments(["build-pairs"], {"build-pairs": str(cfg)})
    assert d.entrypoint == "flows.build_pairs.build_pairs" and d.parameters["config"]["sampler"]["k"] == 6
    assert [(x.schedule.cron, x.active) for x in d.schedules] == [(deploy.FLOWS["build-pairs"].cron, False)]
    (d,) = deploy.deployments(["build-pairs"], schedules_active=True)
    assert [x.active for x in d.schedules] == [True]
    with pytest.raises(SystemExit):
        deploy.main(["--config", "no-such-flow=x.yaml"])
    with pytest.raises(ValueError, match="unknown flow"):
        deploy.deployments(["nope"])
