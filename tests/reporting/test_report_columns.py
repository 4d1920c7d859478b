"""The run reports read only the columns they draw: the same figures come out of a run directory whose texts are
gone (pairs.parquet without prompt/chosen/rejected, no candidates.parquet), so a large run's reports never load
its texts; the texts they show (the reward figure's labels, the pair viewer's sample) are read for those prompts
only."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipelines.core import io, schema
from pipelines.pairs import build
from pipelines.pairs.config import BuildConfig
from pipelines.reporting import plots, report


def _finished_run(tmp_path) -> dict:
    config = BuildConfig.model_validate({"run_id": "full", "output_dir": str(tmp_path), "batch_size": 4,
                                         "prompts": {"limit": 10}, "sampler": {"k": 3}})
    run = build.prepare(config)
    results = []
    for b in run.batches:
        cands, scores = [], []
        for n, pid in enumerate(b.prompt_ids):
            for j in range(3):
                cid = f"{pid[:8]}-{j}"
                cands.append(dict(candidate_id=cid, prompt_id=pid, sample_index=j, text=f"text {j} " * 50,
                                  model="m", sampler="transformers", seed=1))
                scores += [dict(candidate_id=cid, prompt_id=pid, scorer="math_verify", score=float(j == n % 3)),
                           dict(candidate_id=cid, prompt_id=pid, scorer="confidence", score=0.1 * j + 0.01 * n)]
        io.write_table(schema.empty(schema.DROPS), run.shard(b, "sample", "drops"), schema.DROPS)
        io.write_table(schema.frame(cands, schema.CANDIDATES), run.shard(b, "sample", "candidates"), schema.CANDIDATES)
        io.write_table(schema.frame(scores, schema.SCORES), run.shard(b, "score"), schema.SCORES)
        results.append(build.BatchResult(b.index, len(b.prompt_ids), False))
    return build.finalize(run, results), run


TEXT_COLUMNS = {"prompt", "chosen", "rejected", "text", "messages", "details"}


def test_reports_read_no_text_column(tmp_path, monkeypatch):
    """Every Parquet read while the reports are written names its columns, and names no text column except the
    messages of the prompts the reward figure labels (read with a row filter: those prompts only)."""
    reads = []
    real = pq.read_table

    def spy(path, *args, columns=None, filters=None, **kwargs):
        reads.append((str(path).rsplit("/", 1)[-1], columns, filters))
        return real(path, *args, columns=columns, filters=filters, **kwargs)

    real_rows_in = io.read_rows_in

    def spy_rows_in(path, key, values, columns=None):  # the few rows of the shown prompts, group by group
        reads.append((str(path).rsplit("/", 1)[-1], columns, [(key, "in", list(values))]))
        return real_rows_in(path, key, values, columns)

    manifest, run = _finished_run(tmp_path)
    monkeypatch.setattr(pq, "read_table", spy)
    monkeypatch.setattr(io, "read_rows_in", spy_rows_in)
    report.write_reports(run.run_dir, manifest, build._report_sample(run, _tally(run), {"math_verify": 1.0,
                                                                                      "confidence": 0.1})[1])
    assert reads and all(columns is not None for _, columns, _ in reads)
    assert {"candidates.parquet", "prompts.parquet"} <= {name for name, _, f in reads if f and f[0][1] == "in"}
    for name, columns, filters in reads:
        texts = TEXT_COLUMNS & set(columns)
        if texts or name in ("candidates.parquet", "scores.parquet"):
            # the reward figure's labels and the pair viewer's sample: a row filter to a few prompts
            assert filters and filters[0][:2] == ("prompt_id", "in") and len(filters[0][2]) <= 30, (name, columns)


def test_figures_need_no_texts(tmp_path):
    manifest, run = _finished_run(tmp_path)
    full = manifest["reports"]
    assert {"rewards", "margins"} <= set(full)
    weights = {s.name: s.weight for s in run.config.scorers}
    picked, pool = build._report_sample(run, _tally(run), weights)
    assert len(picked) == 10 and set(pool["prompt_id"]) == set(picked)  # only the shown prompts' rows
    # the same run directory without its texts
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    pairs = pq.read_table(run.run_dir / "pairs.parquet").drop_columns(["prompt", "chosen", "rejected"])
    pq.write_table(pairs, stripped / "pairs.parquet")
    for name in ("drops", "prompts"):
        (stripped / f"{name}.parquet").write_bytes((run.run_dir / f"{name}.parquet").read_bytes())
    again = report.write_reports(stripped, {**manifest, "run_dir": str(stripped)}, pool, prompt_ids=picked)
    for name in ("rewards", "margins"):
        assert open(again[name], "rb").read() == open(full[name], "rb").read(), name
    assert not (stripped / "candidates.parquet").exists()


def _tally(run):
    """The sample finalize draws for the reports, drawn again from the finished run's files."""
    from pipelines.pairs.finalize import Tally
    tally = Tally()
    tally.sample.offer(plots.read_run_table(run.run_dir, "prompts", ["prompt_id"])["prompt_id"],  # all scored here
                       plots.read_run_table(run.run_dir, "pairs", ["prompt_id"])["prompt_id"])
    return tally
