"""Run reports from a hand-built run: plots, report.html, the dataset card, the Prefect artifact markdown.

No model: candidates and scores are written as the batch shards `pipelines.pairs.build.finalize` reads, so the real
finalize (selection, CHES filter with stubbed hidden-state scores, report writing) runs on them.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.core import io, schema
from pipelines.pairs import build, rewards
from pipelines.pairs.config import BuildConfig
from pipelines.reporting import plots, report

K = 4


def _shards(run: build.Run, all_errors: bool = False) -> list[build.BatchResult]:
    """Candidates and scores for every batch: correctness 0/1 + a confidence term; the last prompt has four
    identical rewards (zero_variance) and one candidate of the first prompt a scorer error (every candidate
    with all_errors)."""
    prompts = run.prompts()
    rng = np.random.default_rng(0)
    results = []
    for b in run.batches:
        cands, scores = [], []
        for pid in b.prompt_ids:
            flat = pid == prompts["prompt_id"].iloc[-1]
            for j in range(K):
                cid = f"{pid[:8]}-{j}"
                cands.append(dict(candidate_id=cid, prompt_id=pid, sample_index=j, text=f"answer {j} to {pid[:6]}",
                                  finish_reason="stop", prompt_tokens=20, completion_tokens=10 + j,
                                  logprob_sum=-3.0 - j, sampler="transformers", model="test-model", seed=7))
                correct = 0.0 if flat else float(j == 0 or rng.random() < 0.3)
                error = "boom" if all_errors or (pid == prompts["prompt_id"].iloc[0] and j == 3) else None
                scores.append(dict(candidate_id=cid, prompt_id=pid, scorer="math_verify",
                                   score=None if error else correct, details="{}", error=error))
                scores.append(dict(candidate_id=cid, prompt_id=pid, scorer="confidence",
                                   score=0.5 if flat else float(rng.uniform(0.1, 0.9)), details="{}", error=None))
        cand_path, drop_path = run.shard(b, "sample", "candidates"), run.shard(b, "sample", "drops")
        io.write_table(schema.frame([], schema.DROPS), drop_path, schema.DROPS)
        io.write_table(schema.frame(cands, schema.CANDIDATES), cand_path, schema.CANDIDATES)
        io.write_table(schema.frame(scores, schema.SCORES), run.shard(b, "score"), schema.SCORES)
        results.append(build.BatchResult(b.index, len(b.prompt_ids), False, {"sample": 1},
                                         {"sample": 0.5, "score": 0.1}))
    return results


def _fake_ches_scores(pairs, ctx, *args, **kwargs):
    """Stands in for the hidden-state computation (tested in tests/pairs/selection/test_model_filters.py):
    distinct values."""
    n = np.arange(len(pairs), dtype=np.float64)
    return pairs.assign(ches=-10.0 * n, ln_ches=0.5 * n - 1.0)


def _run(tmp_path, monkeypatch, pair_filters=(), all_errors=False) -> dict:
    monkeypatch.setattr("pipelines.pairs.selection.ches.score_pairs", _fake_ches_scores)
    config = BuildConfig.model_validate({
        "run_id": "report-test", "output_dir": str(tmp_path), "prompts": {"limit": 10}, "batch_size": 4,
        "sampler": {"k": K}, "selection": {"rule": "mu_2sigma", "pair_filters": list(pair_filters)}})
    run = build.prepare(config)
    return build.finalize(run, _shards(run, all_errors))


@pytest.fixture
def ches_run(tmp_path, monkeypatch):
    return _run(tmp_path, monkeypatch, [{"name": "ches", "params": {"drop_fraction": 0.3}}])


def test_finalize_writes_figures_report_and_card(ches_run):
    reports = ches_run["reports"]
    assert set(reports) == {"rewards", "margins", "ches", "report_html", "dataset_card"}
    for name in ("rewards", "margins", "ches"):
        png = open(reports[name], "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, name
        assert reports[name].endswith(f"report-test/plots/{name}.png")
    manifest = json.load(open(f"{ches_run['run_dir']}/manifest.json"))
    assert manifest["reports"] == reports


def test_every_report_carries_the_pair_audit(ches_run):
    """The audit is computed on the run's own tables (its numbers are checked in test_audit.py) and shown in the
    manifest, the terminal summary, report.html and the dataset card."""
    from pipelines.reporting.audit import pair_audit
    run_dir = ches_run["run_dir"]
    tables = [pd.read_parquet(f"{run_dir}/{name}.parquet") for name in ("pairs", "candidates", "scores")]
    assert ches_run["audit"] == json.loads(json.dumps(pair_audit(*tables)))
    assert ches_run["audit"]["pairs"] == ches_run["counts"]["pairs"] > 0
    assert "math_verify" in ches_run["audit"]["verified"]
    share = f"{ches_run['audit']['verified']['math_verify']['chosen_right']:.1%}"
    assert f"chosen verified right (math_verify) {share}" in report.summary_text(ches_run)
    html = open(ches_run["reports"]["report_html"]).read()
    assert f"<td>chosen verified right (math_verify)</td><td>{share}</td>" in html
    assert f"| chosen verified right (math_verify) | {share} |" in open(ches_run["reports"]["dataset_card"]).read()
    assert "## Pair audit" in report.summary_markdown(ches_run)


def test_report_html_is_self_contained(ches_run):
    html = open(ches_run["reports"]["report_html"]).read()
    srcs = re.findall(r"src='([^']*)'", html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html  # nothing to fetch
    drops = pd.read_parquet(f"{ches_run['run_dir']}/drops.parquet")
    for reason in drops["reason"].unique():
        assert f"<td>{reason}</td>" in html
    assert f"<td>pairs out</td><td>{ches_run['counts']['pairs']}</td>" in html


def test_dataset_card_header_loads_with_datasets(ches_run):
    card = open(ches_run["reports"]["dataset_card"]).read()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0]["path"] == "pairs.parquet"
    assert header["license"] == "other" and header["size_categories"] == ["n<1K"]
    assert "test-model" in card and "`mu_2sigma`" in card and "k=4" in card
    drops = pd.read_parquet(f"{ches_run['run_dir']}/drops.parquet")
    for (stage, reason), n in drops.groupby(["stage", "reason"]).size().items():
        assert f"| {stage} | {reason} | {n} |" in card
    from datasets import load_dataset
    ds = load_dataset(ches_run["run_dir"], split="train")  # through the card's `configs`, as the Hub would
    assert len(ds) == ches_run["counts"]["pairs"] > 0
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)


def test_ches_scores_are_kept_for_kept_and_dropped_pairs(ches_run):
    pairs = pd.read_parquet(f"{ches_run['run_dir']}/pairs.parquet")
    drops = pd.read_parquet(f"{ches_run['run_dir']}/drops.parquet")
    assert pairs["ln_ches"].notna().all() and pairs["ches"].notna().all()
    n_dropped = (drops["reason"] == "ches_filtered").sum()
    assert n_dropped >= 1
    values = plots.ches_values(pairs, drops)
    scored = len(pairs) + n_dropped  # mu_2sigma: one pair per prompt, so one drop row per removed pair
    # the filter used ln_ches (default), so dropped pairs carry ln_ches only; they are the highest values
    assert len(values["ln_ches"]["kept"]) + len(values["ln_ches"]["dropped"]) == scored
    assert values["ln_ches"]["dropped"].min() > values["ln_ches"]["kept"].max()
    expected = sorted(0.5 * np.arange(scored) - 1.0)
    got = sorted(np.concatenate([values["ln_ches"]["kept"], values["ln_ches"]["dropped"]]))
    assert got == pytest.approx(expected, abs=1e-5)


def test_no_ches_figure_without_the_filter(tmp_path, monkeypatch):
    manifest = _run(tmp_path, monkeypatch)
    assert "ches" not in manifest["reports"] and "rewards" in manifest["reports"]
    assert pd.read_parquet(f"{manifest['run_dir']}/pairs.parquet")["ln_ches"].isna().all()


def test_a_run_without_pairs_still_gets_its_report_and_card(tmp_path, monkeypatch):
    manifest = _run(tmp_path, monkeypatch, all_errors=True)
    assert manifest["counts"]["pairs"] == 0
    assert set(manifest["reports"]) == {"report_html", "dataset_card"}  # no reward, margin or CHES to plot
    assert "<td>score_error</td>" in open(manifest["reports"]["report_html"]).read()
    assert "| select | score_error | 40 |" in open(manifest["reports"]["dataset_card"]).read()


def test_sampled_prompts_prefer_paired_ones_and_are_stable(ches_run):
    run_dir = ches_run["run_dir"]
    weights = {s["name"]: s["weight"] for s in ches_run["config"]["scorers"]}
    pool = rewards.combine(pd.read_parquet(f"{run_dir}/candidates.parquet"),
                           pd.read_parquet(f"{run_dir}/scores.parquet"), weights)
    pairs = pd.read_parquet(f"{run_dir}/pairs.parquet")
    picked = plots.sample_prompts(pool, pairs, n=3)
    assert len(picked) == 3 and set(picked) <= set(pairs["prompt_id"])
    assert picked == plots.sample_prompts(pool, pairs, n=3)
    everything = plots.sample_prompts(pool, pairs, n=100)
    assert set(everything) == set(pool.loc[pool["reward"].notna(), "prompt_id"])  # paired + zero_variance one
    assert set(everything[:len(set(pairs["prompt_id"]))]) == set(pairs["prompt_id"])


def test_artifact_markdown_inlines_the_figures(ches_run):
    figures = {k: v for k, v in ches_run["reports"].items() if k in ("rewards", "margins", "ches")}
    md = report.artifact_markdown(ches_run, figures)
    assert md.startswith(report.summary_markdown(ches_run))
    assert len(re.findall(r"!\[\w+\]\(data:image/png;base64,[A-Za-z0-9+/=]+\)", md)) == 3


def test_size_category_buckets():
    assert [report.size_category(n) for n in (0, 999, 1000, 123_456, 20_000_000)] == \
        ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "10M<n<100M"]


def test_step_summary_markdown():
    manifest = {"run_id": "s1", "run_dir": "runs/s1", "counts": {
        "prompts_in": 3, "prompts_loaded": 2, "pairs": 4, "pairs_by_mode": {"step": 3, "correction": 1},
        "prompts_paired": 2, "trees": 2, "tree_nodes": 17, "rollouts": 9,
        "drops_by_reason": [{"stage": "load", "reason": "empty_prompt", "n": 1}]},
        "engine_calls": {"expand": 5}, "batches": {"total": 1, "resumed": 0}, "timings": {"load_s": 0.5}}
    md = report.step_summary_markdown(manifest)
    for row in ("| pairs (step) | 3 |", "| pairs (correction) | 1 |", "| engine calls (expand) | 5 |",
                "| load | empty_prompt | 1 |", "| load | 0.50 |", "| batches resumed | 0 of 1 |"):
        assert row in md
