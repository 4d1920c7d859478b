"""One build_pairs run on the run core (pipelines/core/run.py): prepare -> process_batch (per batch) -> finalize.

The Prefect flow (flows/build_pairs.py) maps `process_batch` over the batches as tasks; `run_local` runs the same
functions on the config's executor without Prefect. Both produce the same files.

Shards per batch, in `<output_dir>/.cache/`: `sample/<key>.candidates.parquet` (+ `.drops.parquet`), keyed by the
batch's prompts, the sampler config and the sampling code; `score/<key>.parquet`, keyed by the sample key, the
scorer config and the scoring code. So changing the scorers re-scores but does not resample. finalize streams
them into the run directory batch by batch (pipelines/pairs/finalize.py), so its memory does not grow with the run.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from pipelines.core import io, schema
from pipelines.core import run as run_core
from pipelines.core.ids import stable_hash
from pipelines.core.progress import to_stderr
from pipelines.core.run import Batch, BatchResult, Run
from pipelines.pairs import rewards, stages
from pipelines.pairs.config import BuildConfig

# the code each shard family depends on: a change here invalidates those shards
SAMPLE_CODE = ("samplers", "pipelines/core/models.py", "pipelines/core/ids.py", "pipelines/core/schema.py",
               "pipelines/pairs/stages.py")
SCORE_CODE = ("scorers", "pipelines/core/schema.py", "pipelines/pairs/stages.py")


def prepare(config: BuildConfig) -> Run:
    """Load and validate the prompts, write prompts.parquet and the load drops, plan the batches."""
    from pipelines.loaders import load_prompts

    t0 = time.perf_counter()
    prompts, drops = load_prompts(config.prompts)
    run = run_core.plan_run(config, "pairs", prompts, drops, batch_keys(config))
    if config.budget.max_total_tokens is not None:
        from pipelines.pairs.cost import batch_bounds
        run.bounds = batch_bounds(run)
    run.timings["load_s"] = time.perf_counter() - t0
    return run


def batch_keys(config: BuildConfig):
    """keys(prompt_ids) -> {"sample": key, "score": key}: a batch's shard keys under this config and code."""
    sampler_cfg, scorer_cfg = config.sampler.model_dump(), [s.model_dump() for s in config.scorers]
    sampler_code, scorer_code = run_core.code_hash(*SAMPLE_CODE), run_core.code_hash(*SCORE_CODE)

    def keys(prompt_ids: list[str]) -> dict[str, str]:
        sample = stable_hash("sample", prompt_ids, sampler_cfg, sampler_code, length=24)
        return {"sample": sample, "score": stable_hash("score", sample, scorer_cfg, scorer_code, length=24)}

    return keys


def process_batch(run: Run, batch: Batch, log=print, on_fraction=None) -> BatchResult:
    """Sample and score one batch, reusing finished shards. Safe to run in another process (Ray).
    on_fraction(share of the batch's prompts sampled) follows the sampler's live progress."""
    from pipelines.core.progress import sampling
    from samplers import get_sampler
    from scorers import get_scorer

    cand_path, drop_path = run.shard(batch, "sample", "candidates"), run.shard(batch, "sample", "drops")
    score_path = run.shard(batch, "score")
    prompts = run.batch_prompts(batch)
    calls, seconds = {}, {}
    # a batch with sample_error drops (an endpoint that failed) is sampled again: the openai sampler's request
    # cache makes that resend only the failed requests
    if cand_path.exists() and not _sample_errors(drop_path):
        candidates = io.read_table(cand_path, schema.CANDIDATES)
    else:
        t0 = time.perf_counter()
        sampler = get_sampler(run.config.sampler)
        if hasattr(sampler, "cache_requests_in"):  # per-request cache of the HTTP samplers
            sampler.cache_requests_in(run.cache_dir / "requests")
        with sampling(f"batch {batch.index + 1}/{run.batch_count}", len(prompts), log, on_fraction):
            candidates, drops = stages.sample_stage(prompts, sampler, run.config.sampler)
        io.write_table(drops, drop_path, schema.DROPS)
        io.write_table(candidates, cand_path, schema.CANDIDATES)  # written last: its presence marks "done"
        calls["sample"], seconds["sample"] = 1, time.perf_counter() - t0
    if calls or not score_path.exists():
        t0 = time.perf_counter()
        scorers = [get_scorer(s.name, s.params) for s in run.config.scorers]
        io.write_table(stages.score_stage(candidates, prompts, scorers), score_path, schema.SCORES)
        seconds["score"] = time.perf_counter() - t0
    log(f"batch {batch.index + 1}/{run.batch_count}: {len(prompts)} prompts, {len(candidates)} candidates"
        f" ({'sampled in %.1fs' % seconds['sample'] if calls else 'resumed from cache'})")
    return BatchResult(batch.index, len(prompts), not calls, calls, seconds, tokens=_tokens(candidates))


def _tokens(candidates: pd.DataFrame) -> dict[str, int]:
    """The policy's tokens of a batch: each prompt once, every generated token (also for a resumed batch)."""
    prompt = candidates.groupby("prompt_id")["prompt_tokens"].first().sum() if len(candidates) else 0
    return {"prompt": int(prompt), "generated": int(candidates["completion_tokens"].sum())}


def finalize(run: Run, results: list[BatchResult]) -> dict:
    """Stream the shards into the run directory, selecting pairs batch by batch (pipelines/pairs/finalize.py:
    memory stays bounded whatever the run's size), then the reports and the manifest; returns the manifest."""
    manifest, tally = write_tables(run, results)
    t1 = time.perf_counter()
    from pipelines.reporting.report import write_reports  # matplotlib is imported only here, at the end of a run
    weights = {s.name: s.weight for s in run.config.scorers}
    picked, pool = _report_sample(run, tally, weights)
    manifest["reports"] = {k: str(p) for k, p in write_reports(run.run_dir, manifest, pool,
                                                                prompt_ids=picked).items()}
    manifest["timings"]["reports_s"] = round(time.perf_counter() - t1, 3)
    if run.config.cache.cleanup:
        from pipelines.core import shards
        manifest["cache"] = {"released": shards.release(run)}
    io.write_json(manifest, run.run_dir / "manifest.json")
    return manifest


def _sample_errors(drop_path) -> bool:
    return drop_path.exists() and bool((io.read_table(drop_path, schema.DROPS)["reason"] == "sample_error").any())


def write_tables(run: Run, results: list[BatchResult]):
    """candidates, scores, pairs and drops.parquet of the run, and its manifest (not written yet, no reports):
    (manifest, tally)."""
    from pipelines.pairs.finalize import finalize_tables

    t0 = time.perf_counter()
    weights = {s.name: s.weight for s in run.config.scorers}
    tally = finalize_tables(run, weights, results)
    run.timings["select_s"] = tally.select_s
    run.timings["write_s"] = time.perf_counter() - t0 - tally.select_s  # reading shards, materializing, writing
    run.timings["sample_s"] = sum(r.seconds.get("sample", 0.0) for r in results)
    run.timings["score_s"] = sum(r.seconds.get("score", 0.0) for r in results)
    load_drops = run.load_drops()
    manifest = run_core.manifest_header(run, results, _prompt_ids(run), load_drops)
    manifest["counts"].update({
        "candidates": tally.candidates,
        "scores": tally.scores,
        "score_errors": tally.score_errors,
        "pairs": tally.pairs,
        "prompts_paired": tally.prompts_paired,
        "prompts_dropped": len(tally.distinct(tally.dropped_ids)),
        "drops_by_reason": tally.drop_records(),
    })
    if run.config.selection.dstc_concat:
        manifest["counts"]["dstc_concatenated"] = tally.dstc
    from pipelines.reporting.audit import summarize
    manifest["audit"] = summarize(tally.audit_frame())
    tally.audit = []
    manifest["timings"] = {k: round(v, 3) for k, v in run.timings.items()}
    return manifest, tally


def _prompt_ids(run: Run) -> pd.DataFrame:
    return io.read_table(run.run_dir / "prompts.parquet", schema.PROMPTS, ["prompt_id"])


def _report_sample(run: Run, tally, weights: dict, n_prompts: int = 12) -> tuple[list[str], pd.DataFrame]:
    """The prompts the reward figure shows (drawn by plots.PromptSample while finalize streamed the batches) and
    the pool rows of just those, from the few shards that hold them."""
    picked = tally.sample.picked()[:n_prompts]
    wanted, parts = set(picked), []
    for b in run.batches:
        if wanted.isdisjoint(b.prompt_ids):
            continue
        candidates = io.read_table(run.shard(b, "sample", "candidates"), schema.CANDIDATES,
                                   ["candidate_id", "prompt_id", "sample_index"])
        scores = io.read_table(run.shard(b, "score"), schema.SCORES, ["candidate_id", "prompt_id", "scorer", "score",
                                                                       "error"])
        pool = rewards.combine(candidates, scores, weights, run.config.selection.normalize)
        parts.append(pool[pool["prompt_id"].isin(wanted)])
    pool = pd.concat(parts, ignore_index=True) if parts else rewards.combine(
        schema.empty(schema.CANDIDATES), schema.empty(schema.SCORES), weights)
    return picked, pool


def run_local(config: BuildConfig, log=to_stderr) -> dict:
    """The whole run without Prefect, on the config's executor (local or Ray): tests, notebooks, iterate."""
    return run_core.run_local(sys.modules[__name__], config, log=log)


def summary_text(manifest: dict) -> str:
    from pipelines.reporting.report import summary_text as text
    budget = run_core.budget_line(manifest)
    return text(manifest) + (f"\n{budget}" if budget else "")


def dry_run(config: BuildConfig) -> str:
    """What the run would cost (prompts, batches, token bound, judge calls, budget, time); loads no model."""
    from pipelines.pairs.cost import dry_run as plan
    return plan(config)
