"""build_pairs' finalize in bounded memory: the run's shards -> candidates, scores, pairs and drops files.

The texts are most of a run's bytes (1M prompts x k=8 x 2,000 characters = 16 GB); selection needs ids, rewards
and a few numbers per candidate. So finalize walks the batches in order, one shard at a time:

    candidates, scores, sample drops of the batch -> streamed into candidates/scores/drops.parquet (io.ParquetSink)
    pool = rewards.combine(batch)                 -> ids + rewards, no texts
    selection (stages.select_index) on the batch  -> every step that looks at one prompt at a time
    pairs materialized from the batch's texts     -> streamed into pairs.parquet (one TRL-ready file)

A prompt never spans batches, so a per-prompt rule or filter gives on a batch what it gives on the whole run.
Steps that compare prompts with each other (top fractions by CHES or dual margin, diverse subsets, global
curricula, prompt dedup; any filter not listed as per-prompt below) run on the compact index of the whole run,
and a second pass materializes the pairs from the texts, batch by batch:

- "tail": a pair filter over the whole run. The batches' pair indexes (ids and scores), stably sorted by
  prompt_id (the order in which every rule lists its pairs over a whole pool), go through it and every filter
  after it; filters that embed or score texts get the texts of the paired candidates only; filters that need
  the valid pool (SelectionContext.pool) get its rows of the paired prompts.
- "global": a pool filter over the whole run (dedup_prompts). Selection runs once, on the compact pool of the
  whole run (ids and rewards of every candidate; texts only when a filter needs them).

The pairs and drops are those of the in-memory path (stages.select_stage over the gathered run), tested for every
rule and filter (tests/pairs/test_finalize_sharded.py). pairs.parquet lists them batch by batch (the in-memory
path in selection's order over the whole run; with one batch the two orders are the same).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import io, schema
from pipelines.core import run as run_core
from pipelines.core.registry import lookup
from pipelines.pairs import rewards, stages
from pipelines.reporting.plots import PromptSample

REPORT_PROMPTS = 12  # prompts the reward figure shows

# steps that look at one prompt at a time (their output for a prompt depends on that prompt's rows only)
PER_PROMPT_POOL_FILTERS = {"dedup_responses"}
PER_PROMPT_PAIR_FILTERS = {"margin", "rank_gap", "length", "implicit_margin"}  # + curry_tiers(prompt), ches(threshold)
# pair filters that read neither texts nor token counts (the others get the paired candidates' rows)
NO_TEXT_PAIR_FILTERS = {"curry_tiers", "margin", "rank_gap"}
# known pair filters that never read SelectionContext.pool (margin does when normalized; an unknown one gets it)
NO_POOL_PAIR_FILTERS = {"curry_tiers", "length", "ches", "implicit_margin", "dual_margin", "diverse_subset"}
COMPACT_CANDIDATES = ["candidate_id", "prompt_id", "sample_index"]
COMBINE_SCORES = ["candidate_id", "prompt_id", "scorer", "score", "error"]
AUDIT_SCORES = ["candidate_id", "scorer", "score"]


def per_prompt_pair_filter(name: str, params: dict) -> bool:
    if name == "curry_tiers":
        return params.get("scope", "prompt") == "prompt"
    if name == "ches":
        return params.get("threshold") is not None  # drop_fraction (the default) ranks all the run's pairs
    return name in PER_PROMPT_PAIR_FILTERS


def needs_texts(name: str, params: dict) -> bool:
    if name == "dual_margin":
        return "implicit" in params.get("sources", ("external", "implicit"))
    if name in ("dedup_prompts",):
        return False  # prompt messages only (SelectionContext.prompts)
    return name not in NO_TEXT_PAIR_FILTERS


def needs_valid_pool(name: str, params: dict) -> bool:
    if name == "margin":
        return params.get("normalize", "none") != "none"
    return name not in NO_POOL_PAIR_FILTERS


@dataclass
class Plan:
    mode: str                     # "stream" | "tail" | "global" (module doc)
    batch_pool_filters: list      # (name, params) run on each batch
    batch_pair_filters: list
    tail: list                    # pair filters over the whole run's pairs, in config order


def plan_selection(selection_cfg) -> Plan:
    pool = stages.filter_list(selection_cfg.pool_filters)
    pair = stages.filter_list(selection_cfg.pair_filters)
    if any(name not in PER_PROMPT_POOL_FILTERS for name, _ in pool):
        return Plan("global", pool, pair, [])
    first_global = next((i for i, (n, p) in enumerate(pair) if not per_prompt_pair_filter(n, p or {})), len(pair))
    mode = "stream" if first_global == len(pair) else "tail"
    return Plan(mode, pool, pair[:first_global], pair[first_global:])


@dataclass
class Tally:
    """What the manifest and the reports need from the streamed tables, without keeping the tables: counts, the
    ids of prompt-level drops (to count prompts dropped), the report's sample of prompts. Outside the stream mode
    also the ids that account for each prompt (checked once at the end) and each batch's scored prompts."""
    candidates: int = 0
    scores: int = 0
    score_errors: int = 0
    pairs: int = 0
    prompts_paired: int = 0                               # batches never share a prompt: a sum of per-batch counts
    drops_by_reason: dict = field(default_factory=dict)  # (stage, reason) -> rows
    dropped_ids: list = field(default_factory=list)      # arrow arrays: prompt-level drop ids (unique per piece)
    accounted_ids: list | None = None                    # arrow arrays of ids with a drop row (not load) or a pair
    scored: dict = field(default_factory=dict)           # batch index -> ids with a valid reward (not stream mode)
    sample: PromptSample = field(default_factory=lambda: PromptSample(REPORT_PROMPTS))
    dstc: dict = field(default_factory=lambda: {"pairs": 0, "unchanged": 0})
    audit: list = field(default_factory=list)             # audit_columns of each piece of pairs, as arrow tables
    #   (~26 bytes a pair: 26 MB at 1M pairs; as 5,000 pandas frames they held 59 MB, and pd.concat 45 MB more)
    select_s: float = 0.0

    def drops(self, df: pd.DataFrame, load: bool = False) -> None:
        if df.empty:
            return
        for (stage, reason), n in df.groupby(["stage", "reason"]).size().items():
            self.drops_by_reason[(stage, reason)] = self.drops_by_reason.get((stage, reason), 0) + int(n)
        ids = pa.array(df["prompt_id"].array, type=pa.large_string())
        self.dropped_ids.append(pc.unique(ids.filter(pc.is_null(pa.array(df["candidate_id"].array)))))
        if not load and self.accounted_ids is not None:
            self.accounted_ids.append(pc.unique(ids))

    def paired(self, prompt_ids: pd.Series) -> None:
        ids = pc.unique(pa.array(prompt_ids.array, type=pa.large_string()))
        self.prompts_paired += len(ids)
        if self.accounted_ids is not None:
            self.accounted_ids.append(ids)

    def audit_frame(self) -> pd.DataFrame:
        """The pieces' audit columns as one frame (a verifier missing from a piece: null there, as pd.concat gave)."""
        if not self.audit:
            return pd.DataFrame()
        return pa.concat_tables(self.audit, promote_options="default").to_pandas()

    @staticmethod
    def distinct(arrays: list) -> pa.Array:
        return pc.unique(pa.concat_arrays(arrays)) if arrays else pa.array([], pa.large_string())

    def drop_records(self) -> list[dict]:
        """As run_core.drops_by_reason lists them (sorted by stage, then reason)."""
        return [{"stage": s, "reason": r, "n": n} for (s, r), n in sorted(self.drops_by_reason.items())]


class Outputs:
    """The four streamed files of a run directory; on an error none of them is left half-written."""

    def __init__(self, run_dir, tally: Tally):
        self.tally = tally
        self.sinks = {name: io.ParquetSink(run_dir / f"{name}.parquet", schema.TABLES[name])
                      for name in ("candidates", "scores", "pairs", "drops")}

    def drops(self, df: pd.DataFrame, load: bool = False) -> None:
        self.tally.drops(df, load)
        self.sinks["drops"].write(df)

    def pairs(self, df: pd.DataFrame, candidates: pd.DataFrame, scores: pa.Table) -> None:
        """A piece of the run's pairs, with its batch's candidates and scores (for the pair audit)."""
        from pipelines.reporting.audit import audit_columns
        self.tally.pairs += len(df)
        self.tally.paired(df["prompt_id"])
        if len(df):
            cols = audit_columns(df, candidates, scores.select(AUDIT_SCORES).to_pandas())
            self.tally.audit.append(pa.Table.from_pandas(cols, preserve_index=False))
        self.sinks["pairs"].write(df)

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def abort(self) -> None:
        for sink in self.sinks.values():
            sink.abort()


@dataclass
class BatchTables:
    prompts: pd.DataFrame
    candidates: pd.DataFrame  # with texts only when this pass needs them
    scores: pa.Table          # all columns (details: dstc_concat)
    pool: pd.DataFrame | None
    sample_drops: pd.DataFrame | None = None
    scored: pa.Array | None = None  # prompts with a valid reward


def finalize_tables(run, weights: dict[str, float], results: list | None = None) -> Tally:
    """Write candidates, scores, pairs and drops.parquet of the run from its shards; returns the tally.

    results: the batches' BatchResults; a batch the token budget stopped has no shards, its prompts get
    `budget_exhausted` drop rows. The budget stops a run at a batch boundary, so the batches that ran are the
    first ones and keep their indices."""
    exhausted = [r for r in results or [] if r.budget_exhausted]
    budget_drops = None
    if exhausted:
        stopped = [run.batches[r.index] for r in exhausted]
        budget_drops = run_core.budget_drops(run, results, pd.concat([run.batch_prompts(b) for b in stopped]))
        run = dataclasses.replace(run, batches=run.batches[:min(r.index for r in exhausted)])
    tally = Tally()
    out = Outputs(run.run_dir, tally)
    try:
        _finalize(run, weights, out, budget_drops)
        out.close()
    except BaseException:
        out.abort()
        raise
    return tally


def _finalize(run, weights: dict[str, float], out: Outputs, budget_drops: pd.DataFrame | None = None) -> None:
    cfg = run.config.selection
    plan = plan_selection(cfg)
    tally = out.tally
    if plan.mode != "stream":
        tally.accounted_ids = []
    prompts = io.RowReader(run.run_dir / "prompts.parquet", schema.PROMPTS)
    out.drops(run.load_drops(), load=True)
    if budget_drops is not None:
        out.drops(budget_drops)
    steps = plan.batch_pool_filters + plan.batch_pair_filters
    texts_now = plan.mode == "stream" or any(needs_texts(n, p or {}) for n, p in steps)
    tail_pool = plan.mode == "tail" and any(needs_valid_pool(n, p or {}) for n, p in plan.tail)
    kept: dict[str, list] = {"index": [], "valid": [], "pool": [], "candidates": [], "prompts": []}
    for batch in run.batches:
        b = _read_batch(run, batch, prompts, weights, out, with_texts=texts_now)
        t0 = time.perf_counter()
        if plan.mode != "stream":
            tally.scored[batch.index] = b.scored
        if plan.mode == "global":
            kept["pool"].append(b.pool)
            kept["candidates"].append(b.candidates)
            kept["prompts"].append(b.prompts)
            continue
        if b.pool.empty:  # every prompt of the batch was dropped while sampling: nothing to select
            if plan.mode == "stream":
                run_core.check_accounted(b.prompts, b.sample_drops)
            continue
        index, drops = stages.select_index(b.pool, b.candidates, b.prompts, cfg, plan.batch_pool_filters,
                                           plan.batch_pair_filters)
        tally.select_s += time.perf_counter() - t0
        out.drops(drops)
        if plan.mode == "stream":
            pairs = _materialize(index, b, cfg, tally)
            out.pairs(pairs, b.candidates, b.scores)
            tally.sample.offer(b.scored, pairs["prompt_id"])
            run_core.check_accounted(b.prompts, pairs, b.sample_drops, drops)  # per batch: bounded
            continue
        kept["index"].append(index)
        if tail_pool:
            valid = valid_pool(b.pool, cfg.rule, b.candidates, b.prompts, plan.batch_pool_filters)
            kept["valid"].append(valid[valid["prompt_id"].isin(set(index["prompt_id"]))])
    if plan.mode != "stream":
        t0 = time.perf_counter()
        if plan.mode == "global":
            index = _select_whole_run(run, cfg, kept, out)
        else:
            index = _tail(run, cfg, plan.tail, kept, out)
        tally.select_s += time.perf_counter() - t0
        _materialize_by_batch(run, index, prompts, cfg, out)
        _check_accounted(run.run_dir / "prompts.parquet", tally)


def _read_batch(run, batch, prompts: io.RowReader, weights, out: Outputs, with_texts: bool) -> BatchTables:
    """Stream a batch's candidates, scores and sample drops into the outputs; its frames for selection."""
    tally = out.tally
    candidates = io.read_arrow(run.shard(batch, "sample", "candidates"), schema.CANDIDATES)
    scores = io.read_arrow(run.shard(batch, "score"), schema.SCORES)
    out.sinks["candidates"].write(candidates)
    out.sinks["scores"].write(scores)
    sample_drops = io.read_table(run.shard(batch, "sample", "drops"), schema.DROPS)
    out.drops(sample_drops)
    tally.candidates += candidates.num_rows
    tally.scores += scores.num_rows
    tally.score_errors += scores.num_rows - scores.column("error").null_count
    cands = (candidates if with_texts else candidates.select(COMPACT_CANDIDATES)).to_pandas()
    pool = rewards.combine(cands, scores.select(COMBINE_SCORES).to_pandas(), weights, run.config.selection.normalize)
    scored = pc.unique(pa.array(pool.loc[pool["reward"].notna(), "prompt_id"].array, type=pa.large_string()))
    return BatchTables(batch_prompts(batch, prompts, run), cands, scores, pool, sample_drops, scored)


def batch_prompts(batch, prompts: io.RowReader, run) -> pd.DataFrame:
    """The batch's PROMPTS rows: its slice of prompts.parquet, read in order through one RowReader."""
    if batch.start is not None:
        rows = prompts.rows(batch.start, batch.start + len(batch.prompt_ids))
        if rows.column("prompt_id").to_pylist() == list(batch.prompt_ids):
            return rows.to_pandas()
    return run.batch_prompts(batch)


def _materialize(index: pd.DataFrame, b: BatchTables, cfg, tally: Tally) -> pd.DataFrame:
    pairs = stages.materialize_pairs(index, b.candidates, b.prompts, cfg.rule)
    if cfg.dstc_concat and len(pairs):
        from pipelines.pairs.dstc_concat import concatenate
        pairs, unchanged = concatenate(pairs, b.scores.select(["candidate_id", "scorer", "details"]).to_pandas())
        tally.dstc["pairs"] += len(pairs) - unchanged
        tally.dstc["unchanged"] += unchanged
    return pairs


def valid_pool(pool: pd.DataFrame, rule: str, candidates, prompts, pool_filters) -> pd.DataFrame:
    """The pool `selection.select` hands its pair filters as SelectionContext.pool (its first steps, again:
    filters that run after a global one see it too). Checked against select's in tests/pairs."""
    from pipelines.pairs.selection import POOL_FILTERS, SelectionContext, common
    ctx = SelectionContext(candidates=candidates, prompts=prompts)
    valid, _ = common.prepare(pool, rule)
    for name, params in pool_filters:
        valid, _ = lookup(POOL_FILTERS, name, "pool filter")(valid, ctx, **(params or {}))
    if pool_filters:
        valid, _ = common.prepare(valid, rule)
    return valid


def _tail(run, cfg, tail: list, kept: dict, out: Outputs) -> pd.DataFrame:
    """The pair filters from the first global one on, over the whole run's pair index."""
    from pipelines.pairs.selection import PAIR_FILTERS, SelectionContext, common
    parts = [i for i in kept["index"] if len(i)]
    index = pd.concat(parts, ignore_index=True) if parts else common.empty_pairs().assign(margin=pd.Series(dtype=float))
    index = index.sort_values("prompt_id", kind="stable", ignore_index=True)  # the whole pool's order
    texts = any(needs_texts(n, p or {}) for n, p in tail)
    candidates, prompts = _rows_of_pairs(run, index) if texts else (None, None)
    needs_pool = any(needs_valid_pool(n, p or {}) for n, p in tail)
    valid = pd.concat(kept["valid"], ignore_index=True) if kept["valid"] else \
        pd.DataFrame({"prompt_id": [], "candidate_id": [], "sample_index": [], "reward": []}) if needs_pool else None
    ctx = SelectionContext(candidates=candidates, prompts=prompts, pool=valid)
    for name, params in tail:
        before = index
        index, drops = lookup(PAIR_FILTERS, name, "pair filter")(index, ctx, **(params or {}))
        out.drops(drops)
        common.check_accounted(before, index, drops, name)
    return index


def _rows_of_pairs(run, index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CANDIDATES rows of the pairs' chosen and rejected responses and the PROMPTS rows of their prompts,
    read shard by shard (the other candidates' texts are never held)."""
    wanted = pa.array(pd.unique(pd.concat([index["chosen_id"], index["rejected_id"]])).astype(object),
                      type=pa.string())
    wanted_prompts = pa.array(pd.unique(index["prompt_id"]).astype(object), type=pa.string())
    cands, prompts = [], []
    reader = io.RowReader(run.run_dir / "prompts.parquet", schema.PROMPTS)
    for batch in run.batches:
        t = io.read_arrow(run.shard(batch, "sample", "candidates"), schema.CANDIDATES)
        cands.append(t.filter(pc.is_in(t.column("candidate_id"), value_set=wanted)))
        p = batch_prompts(batch, reader, run)
        keep = pc.is_in(pa.array(p["prompt_id"].array), value_set=wanted_prompts)
        prompts.append(p[keep.to_numpy(zero_copy_only=False)])
    return (pa.concat_tables(cands).to_pandas() if cands else schema.empty(schema.CANDIDATES),
            pd.concat(prompts, ignore_index=True) if prompts else schema.empty(schema.PROMPTS))


def _select_whole_run(run, cfg, kept: dict, out: Outputs) -> pd.DataFrame:
    """A pool filter that compares prompts across the run: one selection over the run's compact pool."""
    from pipelines.pairs.selection import common
    pools = [p for p in kept["pool"] if len(p)]
    if not pools:
        return common.empty_pairs()
    pool = pd.concat(pools, ignore_index=True)
    candidates = pd.concat(kept["candidates"], ignore_index=True)
    prompts = pd.concat(kept["prompts"], ignore_index=True)
    index, drops = stages.select_index(pool, candidates, prompts, cfg)
    out.drops(drops)
    return index


def _materialize_by_batch(run, index: pd.DataFrame, prompts: io.RowReader, cfg, out: Outputs) -> None:
    """Second pass: each batch's pairs (in the index's order) from that batch's texts."""
    at = np.zeros(0, dtype=np.int64)
    if len(index):
        all_ids = pa.array([p for batch in run.batches for p in batch.prompt_ids], type=pa.large_string())
        batch_numbers = np.repeat([b.index for b in run.batches], [len(b.prompt_ids) for b in run.batches])
        at = batch_numbers[pc.index_in(pa.array(index["prompt_id"].array, type=pa.large_string()),
                                       value_set=all_ids).to_numpy(zero_copy_only=False)]
        del all_ids
    order = np.argsort(at, kind="stable")
    bounds = np.searchsorted(at[order], np.arange(len(run.batches) + 1))
    for batch in run.batches:
        rows = order[bounds[batch.index]:bounds[batch.index + 1]]
        scored = out.tally.scored.pop(batch.index, None)
        if not len(rows):
            out.tally.sample.offer(scored if scored is not None else [], [])
            continue
        candidates = io.read_arrow(run.shard(batch, "sample", "candidates"), schema.CANDIDATES,
                                   ["candidate_id", "prompt_id", "text", "model", "finish_reason",
                                    "completion_tokens"]).to_pandas()
        scores = io.read_arrow(run.shard(batch, "score"), schema.SCORES)
        b = BatchTables(batch_prompts(batch, prompts, run), candidates, scores, None)
        pairs = _materialize(index.iloc[rows].reset_index(drop=True), b, cfg, out.tally)
        out.pairs(pairs, candidates, scores)
        out.tally.sample.offer(scored if scored is not None else [], pairs["prompt_id"])


def _check_accounted(prompts_path, tally: Tally) -> None:
    """Every loaded prompt is in a pair or has a drop row (load drops do not count: they are other rows)."""
    ids = io.read_arrow(prompts_path, schema.PROMPTS, ["prompt_id"]).column("prompt_id")
    ids = ids.combine_chunks().cast(pa.large_string())
    lost = ids.filter(pc.invert(pc.is_in(ids, value_set=Tally.distinct(tally.accounted_ids))))
    if len(lost):
        raise RuntimeError(f"{len(lost)} prompts neither paired nor dropped: {sorted(lost.to_pylist())[:5]}")


def in_memory_tables(run) -> dict[str, pd.DataFrame]:
    """The finalize this module replaced, kept as the reference it is tested (tests/pairs) and measured
    (benchmarks/scale.py) against: every shard gathered into pandas, one selection over the whole run. Its memory
    grows with the texts (~35-60 KB per prompt at k=8 and 1-2 KB responses). {candidates, scores, pairs, drops}."""
    def gather(family, name, table):
        parts = [io.read_table(run.shard(b, family, name), table) for b in run.batches]
        return pd.concat(parts, ignore_index=True) if parts else schema.empty(table)
    prompts, load_drops = run.prompts(), run.load_drops()
    candidates = gather("sample", "candidates", schema.CANDIDATES)
    sample_drops = gather("sample", "drops", schema.DROPS)
    scores = gather("score", None, schema.SCORES)
    selection = run.config.selection
    weights = {s.name: s.weight for s in run.config.scorers}
    pairs, select_drops = stages.select_stage(candidates, scores, prompts, selection, weights)
    if selection.dstc_concat:
        from pipelines.pairs.dstc_concat import concatenate
        pairs, _ = concatenate(pairs, scores)
    drops = pd.concat([load_drops, sample_drops, select_drops], ignore_index=True)
    return {"candidates": candidates, "scores": scores, "pairs": pairs, "drops": drops}
