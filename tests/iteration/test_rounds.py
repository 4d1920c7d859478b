"""Iterative rounds on the real embedded model: round r samples with round r-1's model; a rerun trains nothing."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from pipelines.iteration.rounds import IterateConfig


def _config(tmp_path, **kw) -> IterateConfig:
    data = {
        "run_id": "it", "output_dir": str(tmp_path), "rounds": 2, "evaluate_initial": False,
        "build": {"prompts": {"limit": 2}, "sampler": {"k": 3, "max_new_tokens": 16, "batch_prompts": 2},
                  "selection": {"rule": "max_min"}},
        "train": {"max_steps": 1, "batch_size": 2, "max_length": 160, "lora": {"r": 4, "alpha": 8}},
        "eval": {"prompts": {"limit": 2}, "sampler": {"max_new_tokens": 16, "batch_prompts": 2}},
    }
    data.update(kw)
    return IterateConfig.model_validate(data)


def test_eval_must_be_held_out():
    with pytest.raises(ValidationError, match="held out"):
        IterateConfig.model_validate({"eval": {"prompts": {"split": "train"}}})
    assert IterateConfig.model_validate({"build": {"prompts": {"limit": 4}}}).build.prompts.split == "train"


@pytest.mark.slow
def test_two_rounds_then_rerun_trains_nothing(tmp_path, smollm_dir):
    from pipelines.iteration.rounds import run
    first = run(_config(tmp_path))
    rounds = {r["round"]: r for r in first["rounds"]}
    assert first["this_run"]["built"] == [1, 2]
    trained = first["this_run"]["trained"]
    assert trained == [1, 2]  # max_min on k=3 with the confidence term: every round has pairs
    assert rounds[1]["policy"] == "embedded:smollm2-135m-instruct"  # round 1 samples with the initial model
    assert rounds[2]["policy"] == rounds[1]["model"]  # round 2 samples with round 1's model
    # the round-2 build really sampled with round 1's model
    build2 = json.load(open(f"{rounds[2]['build_dir']}/manifest.json"))
    assert build2["config"]["sampler"]["model"] == rounds[1]["model"]
    for r in rounds.values():
        assert r["status"] == "done" and r["n_pairs"] >= 1 and os.path.exists(f"{r['model']}/config.json")
        assert 0.0 <= r["eval"]["accuracy"] <= 1.0 and r["eval"]["n"] == 2
    saved = json.load(open(first["path"]))
    assert saved["rounds"] == first["rounds"]
    metrics_mtimes = {r: os.path.getmtime(tmp_path / "it" / f"round_{r}" / "train" / "metrics.json") for r in trained}

    again = run(_config(tmp_path))
    assert again["this_run"] == {"built": [], "trained": [], "evaluated": []}
    assert again["rounds"] == first["rounds"]
    for r, mtime in metrics_mtimes.items():
        assert os.path.getmtime(tmp_path / "it" / f"round_{r}" / "train" / "metrics.json") == mtime

    with pytest.raises(ValueError, match="another configuration"):
        run(_config(tmp_path, train={"max_steps": 2}))
