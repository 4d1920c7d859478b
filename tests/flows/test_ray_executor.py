"""`executor: ray` under Prefect: the build_pairs flow runs its batches with prefect-ray's RayTaskRunner on a local
2-CPU Ray cluster, with the real model, and gives the local executor's pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.pairs.build import run_local
from tests.helpers import RAY_FLOAT_RTOL, RAY_LOCAL, small_build_config

pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # Ray, Prefect and the real model


def _config(out, **kw):
    return small_build_config(out, sampler={"k": 2, "max_new_tokens": 12}, **kw)


def test_ray_executor_gives_the_local_executors_pairs(tmp_path, smollm_dir, prefect_harness):
    import samplers
    from flows.build_pairs import build_pairs

    local = run_local(_config(tmp_path / "local", run_id="local"))
    before = samplers._cached.cache_info()
    on_ray = build_pairs(config=_config(tmp_path / "ray", run_id="ray",
                                        executor={"name": "ray", "init_kwargs": RAY_LOCAL}))
    # a fresh output dir: both batches were sampled, and not in this process (no sampler was asked for here)
    assert on_ray["engine_calls"] == {"sample": 2} and on_ray["batches"]["total"] == 2
    assert samplers._cached.cache_info() == before
    assert on_ray["config"]["executor"]["name"] == "ray"
    # Same texts and ids; float columns equal to RAY_FLOAT_RTOL (tests/helpers.py: a Ray worker runs torch on 1
    # thread); `details`, JSON text holding the log-probs, is left out.
    for name in ("pairs", "candidates", "scores", "drops"):
        a = pd.read_parquet(f"{local['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        b = pd.read_parquet(f"{on_ray['run_dir']}/{name}.parquet").drop(columns=["details"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, rtol=RAY_FLOAT_RTOL)
    assert on_ray["counts"] == local["counts"]
