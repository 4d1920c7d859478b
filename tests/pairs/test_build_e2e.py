"""End to end on the real embedded model: run dir contract, accounting, TRL loading, resume, the Prefect flow.

The Prefect flow's test is here, not in tests/flows/, because it resumes from the shards of this module's run.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.pairs.build import run_local
from pipelines.pairs.config import BuildConfig
from tests.helpers import small_build_config

pytestmark = pytest.mark.slow  # the real model (and Prefect)


def _config(tmp_path, **kw) -> BuildConfig:
    return small_build_config(tmp_path / "runs", **kw)  # 3 prompts, k=3, batches of 2, rule mu_2sigma


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, smollm_dir):
    tmp = tmp_path_factory.mktemp("e2e")
    return tmp, run_local(_config(tmp, run_id="first"))


def test_run_directory_contract(first_run):
    _, manifest = first_run
    run_dir = manifest["run_dir"]
    for name in ("candidates", "scores", "pairs", "drops", "prompts"):
        assert pd.read_parquet(f"{run_dir}/{name}.parquet") is not None
    saved = json.load(open(f"{run_dir}/manifest.json"))
    assert saved["counts"] == manifest["counts"] and "torch" in saved["versions"]
    assert manifest["counts"]["candidates"] == 9 and manifest["counts"]["scores"] == 18  # 3 prompts x k=3 x 2 scorers
    assert manifest["engine_calls"] == {"sample": 2}  # 2 batches of <= 2 prompts


def test_every_prompt_is_paired_or_dropped(first_run):
    _, manifest = first_run
    run_dir = manifest["run_dir"]
    prompts = pd.read_parquet(f"{run_dir}/prompts.parquet")
    pairs = pd.read_parquet(f"{run_dir}/pairs.parquet")
    drops = pd.read_parquet(f"{run_dir}/drops.parquet")
    prompt_drops = drops[drops["candidate_id"].isna()]
    assert set(pairs["prompt_id"]) | set(prompt_drops["prompt_id"]) == set(prompts["prompt_id"])
    assert not set(pairs["prompt_id"]) & set(prompt_drops["prompt_id"])
    # candidates: each is in a pair, or has its own drop row, or belongs to a dropped prompt
    cands = pd.read_parquet(f"{run_dir}/candidates.parquet")
    used = set(pairs["chosen_id"]) | set(pairs["rejected_id"]) | set(drops["candidate_id"].dropna())
    orphan = cands[~cands["candidate_id"].isin(used) & ~cands["prompt_id"].isin(prompt_drops["prompt_id"])]
    assert orphan.empty
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all()


def test_pairs_load_in_datasets_in_trl_format(first_run):
    from datasets import load_dataset
    _, manifest = first_run
    ds = load_dataset("parquet", data_files=f"{manifest['run_dir']}/pairs.parquet", split="train")
    assert len(ds) == manifest["counts"]["pairs"] >= 1
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert isinstance(row["rejected"][0]["content"], str) and row["rule"] == "mu_2sigma"


def test_rerun_resumes_from_shards_without_engine_calls(first_run):
    tmp, first = first_run
    again = run_local(_config(tmp, run_id="second"))
    assert again["engine_calls"] == {} and again["batches"]["resumed"] == 2
    a = pd.read_parquet(f"{first['run_dir']}/pairs.parquet")
    b = pd.read_parquet(f"{again['run_dir']}/pairs.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_prefect_flow_runs_the_same_stages(first_run, prefect_harness):
    from flows.build_pairs import build_pairs
    tmp, first = first_run
    manifest = build_pairs(config=_config(tmp, run_id="flow"))
    assert manifest["engine_calls"] == {}  # same inputs/config/code: resumed from the shards of the first run
    a = pd.read_parquet(f"{first['run_dir']}/pairs.parquet")
    b = pd.read_parquet(f"{manifest['run_dir']}/pairs.parquet")
    pd.testing.assert_frame_equal(a, b)
