"""One build_step_pairs run on the run core (pipelines/core/run.py): prepare -> process_batch -> finalize.

Like pipelines/pairs/build.py: flows/build_step_pairs.py maps `process_batch` over the batches as Prefect tasks,
`run_local` runs the same functions on the config's executor without Prefect. A batch's trees are searched
together (one sampler call per expansion round for all of them). Its results are shards in
`<output_dir>/.cache/step/<key>.{pairs,drops}.parquet` + `.trees.json`, keyed by the batch's prompts, the config
and the code, written atomically: a rerun after a crash calls no engine for finished batches.

Run directory: step_pairs.parquet (TRL-ready), drops.parquet, prompts.parquet, trees/<prompt_id>.json,
manifest.json (counts, engine calls by kind, sampled tokens beside the cost bound, timings).
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd

from pipelines.core import cost, io, schema
from pipelines.core import run as run_core
from pipelines.core.ids import prompt_seed, stable_hash
from pipelines.core.progress import to_stderr
from pipelines.core.run import Batch, BatchResult, Run
from pipelines.step_pairs.config import StepPairsConfig

STEP_CODE = ("samplers", "scorers/math_verify_pool.py", "pipelines/core/models.py", "pipelines/core/ids.py",
             "pipelines/core/schema.py", "pipelines/step_pairs")


def prepare(config: StepPairsConfig) -> Run:
    from pipelines.loaders import load_prompts

    t0 = time.perf_counter()
    code = run_core.code_hash(*STEP_CODE)
    settings = config.model_dump(include={"sampler", "modes", "mcts", "correction"})

    def keys(prompt_ids: list[str]) -> dict[str, str]:
        return {"step": stable_hash("step-batch", prompt_ids, settings, code, length=24)}

    prompts, drops = load_prompts(config.prompts)
    run = run_core.plan_run(config, "step_pairs", prompts, drops, keys, run_prefix="step-")
    if config.budget.max_total_tokens is not None:
        count, _ = cost.prompt_counter(config.sampler)
        run.bounds = cost.batch_bounds(run.batches, cost.prompt_tokens(run.prompts(), count),
                                       sum(config.token_bound().values()))
    run.timings["load_s"] = time.perf_counter() - t0
    return run


def dry_run(config: StepPairsConfig) -> str:
    """What the run would cost: prompts, batches, the cost formula's token bound, budget, time; loads no model."""
    from pipelines.loaders import load_prompts
    prompts, drops = load_prompts(config.prompts)
    batches = run_core.plan_batches(prompts["prompt_id"].tolist(), config.batch_size)
    count, counted = cost.prompt_counter(config.sampler)
    per_prompt, bound = cost.prompt_tokens(prompts, count), config.token_bound()
    generated = sum(bound.values())
    plan = cost.CostPlan(
        source=str(prompts["source"].iloc[0]) if len(prompts) else config.prompts.path, prompts=len(prompts),
        load_drops=len(drops), batch_sizes=[len(b.prompt_ids) for b in batches],
        sampler=f"{config.sampler.name} {config.sampler.model}, modes {config.modes}",
        generated_formula=f"{len(prompts)} prompts x {generated:,} per prompt: "
                          + ", ".join(f"{k} {v:,}" for k, v in bound.items() if v),
        prompt_tokens=sum(per_prompt.values()), generated_bound=len(prompts) * generated, counted=counted,
        bounds=cost.batch_bounds(batches, per_prompt, generated), max_total_tokens=config.budget.max_total_tokens,
        rate=cost.rate_of(config))
    return plan.text()


def build_batch(prompts: pd.DataFrame, sampler, outcome, config: StepPairsConfig):
    """The whole step-pair work for a batch of prompts -> (pair rows, drop rows, trees, calls, stats)."""
    from pipelines.step_pairs import extract, first_error, mcts

    mc = config.mcts
    drops, trees = schema.DropLog(), []
    budget = max(mc.max_depth * mc.step_tokens + mc.rollout_tokens, config.correction.solution_tokens)
    for row in prompts.itertuples(index=False):
        if row.reference is None or pd.isna(row.reference) or not str(row.reference).strip():
            drops.add(row.prompt_id, "select", "no_reference", f"{row.source}:{row.row}: no reference answer", "all")
            continue
        n_tokens = sampler.prompt_tokens(list(row.messages))
        if n_tokens + budget > sampler.max_context:
            drops.add(row.prompt_id, "sample", "prompt_too_long", f"{row.source}:{row.row}: {n_tokens} prompt "
                      f"tokens + {budget} new > context {sampler.max_context}", "all")
            continue
        trees.append(mcts.Tree(prompt_id=row.prompt_id, messages=[dict(m) for m in row.messages],
                               reference=str(row.reference), seed=prompt_seed(config.sampler.seed, row.prompt_id)))
    rows: list[dict] = []
    stats = mcts.SearchStats()
    if trees and ({"step", "trajectory"} & set(config.modes)):
        mcts.search(trees, sampler, outcome, mc, stats)
        for tree in trees:
            if "step" in config.modes:
                found, why = extract.step_pairs(tree, mc.rejected, mc.min_q_margin)
                rows += found
                if not found:
                    drops.add(tree.prompt_id, "select", "no_step_pair", why, "step")
            if "trajectory" in config.modes:
                found, why = extract.trajectory_pair(tree)
                rows += found
                if not found:
                    drops.add(tree.prompt_id, "select", "no_trajectory_pair", why, "trajectory")
    if trees and "correction" in config.modes:
        found, fe_drops = first_error.first_error_pairs(trees, sampler, outcome, config.correction,
                                                        list(mc.delimiters), stats)
        rows += found
        for d in fe_drops:
            drops.add(d["prompt_id"], "select", d["reason"], d["detail"], "correction")
    for r in rows:
        r["model"] = sampler.model_name
    extract.render_prompts(rows, sampler.render)
    return rows, drops.frame(), trees, dict(stats.engine_calls), stats


def process_batch(run: Run, batch: Batch, log=print, on_fraction=None) -> BatchResult:
    """One batch's trees, reusing a finished shard. on_fraction is not used: a step search samples nodes, so its
    live progress shows tokens and their rate, not prompts."""
    from pipelines.core.progress import sampling
    from pipelines.step_pairs.outcome import MathOutcome
    from samplers import get_sampler

    pairs_path, drops_path = run.shard(batch, "step", "pairs"), run.shard(batch, "step", "drops")
    trees_path = run.shard(batch, "step", "trees", suffix=".json")
    tokens_path = run.shard(batch, "step", "tokens", suffix=".json")
    if pairs_path.exists():
        log(f"batch {batch.index + 1}/{run.batch_count}: resumed from cache")
        tokens = json.loads(tokens_path.read_text()) if tokens_path.exists() else {}
        return BatchResult(batch.index, len(batch.prompt_ids), resumed=True, tokens=tokens)
    t0 = time.perf_counter()
    prompts = run.batch_prompts(batch)
    sampler = get_sampler(run.config.sampler)
    outcome = MathOutcome()
    with sampling(f"batch {batch.index + 1}/{run.batch_count}", None, log):
        rows, drops, trees, calls, stats = build_batch(prompts, sampler, outcome, run.config)
    tokens = {"prompt": sum(sampler.prompt_tokens(list(m)) for m in prompts["messages"]),
              "generated": int(sum(stats.tokens.values()))}
    io.write_json(tokens, tokens_path)
    io.write_json([t.to_json() for t in trees], trees_path)
    io.write_table(drops, drops_path, schema.DROPS)
    io.write_table(schema.frame(rows, schema.STEP_PAIRS), pairs_path, schema.STEP_PAIRS)  # last: marks "done"
    seconds = time.perf_counter() - t0
    log(f"batch {batch.index + 1}/{run.batch_count}: {len(prompts)} prompts, {len(rows)} pairs, "
        f"{stats.nodes} nodes, {stats.rollouts} rollouts, calls {calls} in {seconds:.1f}s")
    return BatchResult(batch.index, len(prompts), False, calls, {"search": seconds},
                       {"nodes": stats.nodes, "rollouts": stats.rollouts, "tokens": dict(stats.tokens),
                        "outcome_timeouts": outcome.timeouts}, tokens=tokens)


def finalize(run: Run, results: list[BatchResult]) -> dict:
    prompts, load_drops = run.prompts(), run.load_drops()
    pairs, drops, trees = [], [load_drops, run_core.budget_drops(run, results, prompts)], []
    for b in (run.batches[r.index] for r in results if not r.budget_exhausted):
        pairs.append(io.read_table(run.shard(b, "step", "pairs"), schema.STEP_PAIRS))
        drops.append(io.read_table(run.shard(b, "step", "drops"), schema.DROPS))
        trees += json.loads(run.shard(b, "step", "trees", suffix=".json").read_text())
    pairs = pd.concat(pairs, ignore_index=True) if pairs else schema.empty(schema.STEP_PAIRS)
    drops = pd.concat(drops, ignore_index=True)
    run_core.check_accounted(prompts, pairs, drops)
    io.write_table(pairs, run.run_dir / "step_pairs.parquet", schema.STEP_PAIRS)
    io.write_table(drops, run.run_dir / "drops.parquet", schema.DROPS)
    for tree in trees:
        io.write_json(tree, run.run_dir / "trees" / f"{tree['prompt_id']}.json")
    tokens = run_core.summed(r.stats.get("tokens", {}) for r in results)
    bound = {k: v * len(trees) for k, v in run.config.token_bound().items()}
    manifest = run_core.manifest_header(run, results, prompts, load_drops)
    manifest["counts"].update({
        "pairs": len(pairs),
        "pairs_by_mode": {m: int(n) for m, n in pairs["mode"].value_counts().items()},
        "prompts_paired": int(pairs["prompt_id"].nunique()),
        "trees": len(trees),
        "tree_nodes": sum(len(t["nodes"]) for t in trees),
        "rollouts": sum(r.stats.get("rollouts", 0) for r in results),
        "outcome_timeouts": sum(r.stats.get("outcome_timeouts", 0) for r in results),  # answers counted wrong
        "drops_by_reason": run_core.drops_by_reason(drops),
    })
    # sampled tokens (this run's engine calls; resumed batches add none) vs the cost formula's upper bound
    manifest["tokens"] = {"sampled": {**tokens, "total": sum(tokens.values())},
                          "bound": {**bound, "total": sum(bound.values())}}
    manifest["timings"] = {**{k: round(v, 3) for k, v in run.timings.items()},
                           "batches_s": round(sum(r.seconds.get("search", 0.0) for r in results), 3)}
    io.write_json(manifest, run.run_dir / "manifest.json")
    return manifest


def summary_text(manifest: dict) -> str:
    c = manifest["counts"]
    lines = [f"run {manifest['run_id']} -> {manifest['run_dir']}",
             f"prompts: {c['prompts_loaded']} loaded, {c['prompts_paired']} paired; pairs: {c['pairs']} "
             f"{c['pairs_by_mode']}",
             f"trees: {c['trees']} ({c['tree_nodes']} nodes, {c['rollouts']} rollouts); engine calls: "
             f"{manifest['engine_calls']}; {manifest['wall_seconds']} s",
             f"sampled tokens: {manifest['tokens']['sampled']['total']} (bound {manifest['tokens']['bound']['total']})"]
    lines += [f"  dropped [{d['stage']}/{d['reason']}]: {d['n']}" for d in c["drops_by_reason"]]
    budget = run_core.budget_line(manifest)
    return "\n".join(lines + ([budget] if budget else []))


def run_local(config: StepPairsConfig, log=to_stderr) -> dict:
    """The whole run without Prefect, on the config's executor (local or Ray)."""
    return run_core.run_local(sys.modules[__name__], config, log=log)
