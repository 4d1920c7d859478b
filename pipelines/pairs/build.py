"""One build_pairs run on the run core (pipelines/core/run.py): prepare -> process_batch (per batch) -> finalize.

The Prefect flow (flows/build_pairs.py) maps `process_batch` over the batches as tasks; `run_local` runs the same
functions on the config's executor without Prefect. Both produce the same files.

Shards per batch, in `<output_dir>/.cache/`: `sample/<key>.candidates.parquet` (+ `.drops.parquet`), keyed by the
batch's prompts, the sampler config and the sampling code; `score/<key>.parquet`, keyed by the sample key, the
scorer config and the scoring code. So changing the scorers re-scores but does not resample.
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
    sampler_cfg, scorer_cfg = config.sampler.model_dump(), [s.model_dump() for s in config.scorers]
    sampler_code, scorer_code = run_core.code_hash(*SAMPLE_CODE), run_core.code_hash(*SCORE_CODE)

    def keys(prompt_ids: list[str]) -> dict[str, str]:
        sample = stable_hash("sample", prompt_ids, sampler_cfg, sampler_code, length=24)
        return {"sample": sample, "score": stable_hash("score", sample, scorer_cfg, scorer_code, length=24)}

    prompts, drops = load_prompts(config.prompts)
    run = run_core.plan_run(config, "pairs", prompts, drops, keys)
    if config.budget.max_total_tokens is not None:
        from pipelines.pairs.cost import batch_bounds
        run.bounds = batch_bounds(run)
    run.timings["load_s"] = time.perf_counter() - t0
    return run


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
    if cand_path.exists():
        candidates = io.read_table(cand_path, schema.CANDIDATES)
    else:
        t0 = time.perf_counter()
        sampler = get_sampler(run.config.sampler)
        with sampling(f"batch {batch.index + 1}/{len(run.batches)}", len(prompts), log, on_fraction):
            candidates, drops = stages.sample_stage(prompts, sampler, run.config.sampler)
        io.write_table(drops, drop_path, schema.DROPS)
        io.write_table(candidates, cand_path, schema.CANDIDATES)  # written last: its presence marks "done"
        calls["sample"], seconds["sample"] = 1, time.perf_counter() - t0
    if not score_path.exists():
        t0 = time.perf_counter()
        scorers = [get_scorer(s.name, s.params) for s in run.config.scorers]
        io.write_table(stages.score_stage(candidates, prompts, scorers), score_path, schema.SCORES)
        seconds["score"] = time.perf_counter() - t0
    log(f"batch {batch.index + 1}/{len(run.batches)}: {len(prompts)} prompts, {len(candidates)} candidates"
        f" ({'sampled in %.1fs' % seconds['sample'] if calls else 'resumed from cache'})")
    return BatchResult(batch.index, len(prompts), not calls, calls, seconds, tokens=_tokens(candidates))


def _tokens(candidates: pd.DataFrame) -> dict[str, int]:
    """The policy's tokens of a batch: each prompt once, every generated token (also for a resumed batch)."""
    prompt = candidates.groupby("prompt_id")["prompt_tokens"].first().sum() if len(candidates) else 0
    return {"prompt": int(prompt), "generated": int(candidates["completion_tokens"].sum())}


def finalize(run: Run, results: list[BatchResult]) -> dict:
    """Gather shards, select pairs, write the run directory and its reports; returns the manifest."""
    t0 = time.perf_counter()
    prompts, load_drops = run.prompts(), run.load_drops()
    ran = [run.batches[r.index] for r in results if not r.budget_exhausted]
    candidates = _gather(run, ran, "sample", "candidates", schema.CANDIDATES)
    sample_drops = pd.concat([_gather(run, ran, "sample", "drops", schema.DROPS),
                              run_core.budget_drops(run, results, prompts)], ignore_index=True)
    scores = _gather(run, ran, "score", None, schema.SCORES)
    selection = run.config.selection
    weights = {s.name: s.weight for s in run.config.scorers}
    pairs, select_drops = stages.select_stage(candidates, scores, prompts, selection, weights)
    concatenated = None
    if selection.dstc_concat:
        from pipelines.pairs.dstc_concat import concatenate
        pairs, unchanged = concatenate(pairs, scores)
        concatenated = {"pairs": len(pairs) - unchanged, "unchanged": unchanged}
    drops = pd.concat([load_drops, sample_drops, select_drops], ignore_index=True)
    run.timings["select_s"] = time.perf_counter() - t0
    run_core.check_accounted(prompts, pairs, drops)

    t1 = time.perf_counter()
    for name, df in (("candidates", candidates), ("scores", scores), ("pairs", pairs), ("drops", drops)):
        io.write_table(df, run.run_dir / f"{name}.parquet", schema.TABLES[name])
    run.timings["write_s"] = time.perf_counter() - t1
    run.timings["sample_s"] = sum(r.seconds.get("sample", 0.0) for r in results)
    run.timings["score_s"] = sum(r.seconds.get("score", 0.0) for r in results)
    manifest = run_core.manifest_header(run, results, prompts, load_drops)
    prompt_level = drops[drops["candidate_id"].isna()]
    manifest["counts"].update({
        "candidates": len(candidates),
        "scores": len(scores),
        "score_errors": int(scores["error"].notna().sum()),
        "pairs": len(pairs),
        "prompts_paired": int(pairs["prompt_id"].nunique()),
        "prompts_dropped": int(prompt_level["prompt_id"].nunique()),
        "drops_by_reason": run_core.drops_by_reason(drops),
    })
    if concatenated is not None:
        manifest["counts"]["dstc_concatenated"] = concatenated
    from pipelines.reporting.audit import pair_audit
    manifest["audit"] = pair_audit(pairs, candidates, scores)
    manifest["timings"] = {k: round(v, 3) for k, v in run.timings.items()}
    from pipelines.reporting.report import write_reports  # matplotlib is imported only here, at the end of a run
    pool = rewards.combine(candidates, scores, weights, selection.normalize)
    manifest["reports"] = {k: str(p) for k, p in write_reports(run.run_dir, manifest, pool).items()}
    io.write_json(manifest, run.run_dir / "manifest.json")
    return manifest


def _gather(run: Run, batches: list[Batch], family: str, name: str | None, table_schema) -> pd.DataFrame:
    parts = [io.read_table(run.shard(b, family, name), table_schema) for b in batches]
    return pd.concat(parts, ignore_index=True) if parts else schema.empty(table_schema)


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
