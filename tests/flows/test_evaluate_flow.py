"""The evaluate flow under Prefect, from its CLI, on the real embedded model."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_evaluate_prefect_flow(tmp_path, prefect_harness, smollm_dir):
    from flows.evaluate import main
    out = tmp_path / "flow.json"
    assert main(["--output", str(out), "--prompts.limit", "1", "--sampler.max_new_tokens", "8"]) == 0
    saved = json.loads(out.read_text())
    assert saved["n"] == 1 and saved["split"] == "eval" and saved["config"]["sampler"]["temperature"] == 0.0
