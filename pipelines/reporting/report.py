"""What a run reports to people: a terminal summary, the Prefect markdown artifact (summary table and figures),
and in the run directory plots/*.png, a self-contained report.html and a Hugging Face style dataset card
README.md. Plain Python (no Prefect): the flow and `--no-prefect` write the same files."""

from __future__ import annotations


def _drop_lines(manifest: dict) -> list[tuple[str, str, int]]:
    return [(d["stage"], d["reason"], d["n"]) for d in manifest["counts"]["drops_by_reason"]]


def _md_table(header: list[str], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows] if rows else \
        lines + ["| " + " | ".join(["-"] * len(header)) + " |"]


def _document(title: str, count_rows: list[tuple], manifest: dict, output: str) -> str:
    """Counts, drops by reason, time per stage, and where the output is, as one markdown document."""
    lines = [f"# {title} `{manifest['run_id']}`", "", *_md_table(["stage", "count"], count_rows)]
    lines += ["", "## Drops by reason", "", *_md_table(["stage", "reason", "rows"], _drop_lines(manifest))]
    if "audit" in manifest:
        lines += ["", "## Pair audit", "", *_md_table(["check", "value"], _audit_rows(manifest))]
    lines += ["", "## Time per stage (s)", "", *_md_table(["stage", "seconds"], _timing_rows(manifest))]
    return "\n".join(lines + ["", f"Output: `{manifest['run_dir']}` ({output})"])


def _timing_rows(manifest: dict) -> list[tuple]:
    return [(k.removesuffix("_s"), f"{v:.2f}") for k, v in manifest["timings"].items()]


def _count_rows(manifest: dict) -> list[tuple]:
    c = manifest["counts"]
    return [("prompts in", c["prompts_in"]), ("prompts loaded", c["prompts_loaded"]),
            ("candidates", c["candidates"]), ("scores (errors)", f"{c['scores']} ({c['score_errors']})"),
            ("pairs out", c["pairs"]), ("prompts paired", c["prompts_paired"]),
            ("prompts dropped", c["prompts_dropped"])]


def summary_markdown(manifest: dict) -> str:
    b = manifest["batches"]
    rows = _count_rows(manifest) + [("batches computed / resumed", f"{b['computed']} / {b['resumed']}")]
    return _document("pairsmith run", rows, manifest, "pairs.parquet, report.html, README.md dataset card")


def step_summary_markdown(manifest: dict) -> str:
    """build_step_pairs' counts (pairs by mode, trees, rollouts, engine calls), drops and timings."""
    c = manifest["counts"]
    rows = [("prompts in", c["prompts_in"]), ("prompts loaded", c["prompts_loaded"]), ("pairs out", c["pairs"]),
            *((f"pairs ({mode})", n) for mode, n in c["pairs_by_mode"].items()),
            ("prompts paired", c["prompts_paired"]), ("trees", c["trees"]), ("tree nodes", c["tree_nodes"]),
            ("rollouts", c["rollouts"]),
            *((f"engine calls ({kind})", n) for kind, n in manifest["engine_calls"].items()),
            ("batches resumed", f"{manifest['batches']['resumed']} of {manifest['batches']['total']}")]
    return _document("pairsmith step-pairs run", rows, manifest, "step_pairs.parquet, trees/")


def _audit_rows(manifest: dict) -> list[tuple[str, str]]:
    from pipelines.reporting.audit import audit_rows
    return audit_rows(manifest["audit"]) if "audit" in manifest else []


def summary_text(manifest: dict) -> str:
    c = manifest["counts"]
    drops = ", ".join(f"{r}={n}" for _, r, n in _drop_lines(manifest)) or "none"
    audit = "; ".join(f"{what} {value}" for what, value in _audit_rows(manifest))
    return (f"pairsmith run {manifest['run_id']}: {c['prompts_in']} prompts -> {c['candidates']} candidates -> "
            f"{c['pairs']} pairs ({c['prompts_paired']} prompts paired, {c['prompts_dropped']} dropped)\n"
            f"drops: {drops}\n" + (f"pair audit: {audit}\n" if audit else "") +
            f"wall {manifest['wall_seconds']:.1f}s; written to {manifest['run_dir']}/pairs.parquet")


# ---- run directory reports: plots/*.png, report.html (self-contained), README.md (dataset card) -------------

def write_reports(run_dir, manifest: dict, pool, n_prompts: int = 12, prompt_ids: list[str] | None = None) -> dict:
    """Figures, report.html and the dataset card README.md into run_dir; {name: path} of everything written.
    pool: the per-candidate rewards selection saw (prompt_id, candidate_id, sample_index, reward): the whole
    pool, or only the rows of `prompt_ids`, the prompts the reward figure shows (what a large run's finalize
    passes). Called by pipelines.pairs.build.finalize, so the Prefect flow and --no-prefect write the same files."""
    from pathlib import Path

    from pipelines.core import io
    from pipelines.reporting.plots import read_run_table, run_figures
    run_dir = Path(run_dir)
    figures = run_figures(run_dir, manifest, pool, n_prompts, prompt_ids)
    models = sorted(read_run_table(run_dir, "pairs", ["model"])["model"].dropna().unique())
    html_path, card_path = run_dir / "report.html", run_dir / "README.md"
    from pipelines.reporting.pair_viewer import pair_viewer_html
    html = report_html(manifest, figures, pair_viewer_html(run_dir, pool))
    for path, text in ((html_path, html), (card_path, dataset_card(manifest, models))):
        io._atomic(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))  # no half files
    return {**figures, "report_html": html_path, "dataset_card": card_path}


def image_base64(path) -> str:
    import base64
    from pathlib import Path
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


FIGURE_TITLES = {"rewards": "Per-prompt reward distributions", "margins": "Pair margins",
                 "ches": "CHES (likelihood displacement) scores"}


def artifact_markdown(manifest: dict, figures: dict) -> str:
    """The summary table followed by the figures inlined as data: URIs (the Prefect UI renders them; an image
    artifact would need a URL the browser can reach, which a local run directory is not)."""
    parts = [summary_markdown(manifest)]
    for name, path in figures.items():
        parts += ["", f"## {FIGURE_TITLES.get(name, name)}", "",
                  f"![{name}](data:image/png;base64,{image_base64(path)})"]
    return "\n".join(parts)


def _html_table(header: list[str], rows: list[tuple]) -> str:
    from html import escape
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(manifest: dict, figures: dict, pairs_html: str = "") -> str:
    """One self-contained page (figures inlined as base64, no script): opens from a laptop, a mail or a CI
    artifact. pairs_html: the pair viewer's section (pipelines/reporting/pair_viewer.py)."""
    from html import escape

    from pipelines.reporting.pair_viewer import STYLE
    figs = "".join(f"<h2>{escape(FIGURE_TITLES.get(n, n))}</h2><img alt='{escape(n)}' "
                   f"src='data:image/png;base64,{image_base64(p)}'>" for n, p in figures.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pairsmith run {escape(manifest['run_id'])}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{max-width:100%}}{STYLE}</style></head><body>
<h1>pairsmith run <code>{escape(manifest['run_id'])}</code></h1>
<p>Started {escape(str(manifest.get('started', '')))}, wall {manifest.get('wall_seconds', 0):.1f} s,
model <code>{escape(manifest['config']['sampler']['model'])}</code>, rule
<code>{escape(manifest['config']['selection']['rule'])}</code>. Output: <code>{escape(manifest['run_dir'])}</code>.
{'<a href="#pairs">Read the pairs</a>.' if pairs_html else ''}</p>
<h2>Counts</h2>{_html_table(['stage', 'count'], _count_rows(manifest))}
<h2>Drops by reason</h2>{_html_table(['stage', 'reason', 'rows'], _drop_lines(manifest))}
<h2>Pair audit</h2>{_html_table(['check', 'value'], _audit_rows(manifest))}
<h2>Time per stage (s)</h2>{_html_table(['stage', 'seconds'], _timing_rows(manifest))}
{figs}
{pairs_html}
</body></html>
"""


def size_category(n: int) -> str:
    """Hugging Face size_categories bucket."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def dataset_card(manifest: dict, models: list[str] | None = None) -> str:
    """README.md of the run directory in Hugging Face dataset-card form: `load_dataset(<run dir>)` reads
    pairs.parquet through the YAML `configs` header. models: what the candidates' `model` column says (the
    configured name resolved, e.g. the embedded model's local directory)."""
    import yaml

    from pipelines.core import schema
    cfg, c = manifest["config"], manifest["counts"]
    header = {
        "license": "other",
        "license_details": "unknown: set it from the licenses of the prompts and of the sampling model",
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "synthetic", "pairsmith"],
        "size_categories": [size_category(c["pairs"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "pairs.parquet"}]}],
    }
    s, sel = cfg["sampler"], cfg["selection"]
    scorers = ", ".join(f"`{x['name']}` × {x['weight']:g}" + (f" {x['params']}" if x.get("params") else "")
                        for x in cfg["scorers"])
    filters = [f"`{f['name']}` {f.get('params') or ''}".strip() for f in
               sel.get("pool_filters", []) + sel.get("pair_filters", [])]
    drops = "\n".join(f"| {st} | {r} | {n} | {schema.REASONS.get(r, '')} |" for st, r, n in _drop_lines(manifest))
    columns = ", ".join(f"`{f.name}`" for f in schema.PAIRS)
    audit = "\n".join(f"| {what} | {value} |" for what, value in _audit_rows(manifest))
    resolved = f" (loaded as {', '.join(f'`{m}`' for m in models)})" if models and models != [s["model"]] else ""
    count_cells = [c["prompts_in"], c["prompts_loaded"], c["candidates"], f"{c['scores']} ({c['score_errors']})",
                   c["pairs"], c["prompts_paired"], c["prompts_dropped"]]
    counts = "| " + " | ".join(str(v) for v in count_cells) + " |"
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# pairsmith preference pairs `{manifest['run_id']}`

{c['pairs']} chosen/rejected pairs for DPO-style training, built by pairsmith: k responses sampled per prompt,
scored, and one (or more) pair picked per prompt by a selection rule. Every input prompt is either in a pair or
in `drops.parquet` with a reason.

## How it was built

- **Prompts**: `{cfg['prompts']['path']}` (format `{cfg['prompts']['format']}`, limit {cfg['prompts']['limit']}),
  system prompt: {cfg['prompts'].get('system_prompt')!r}
- **Model** (wrote both responses of every pair): `{s['model']}` via `{s['name']}`{resolved}
- **Sampler**: k={s['k']}, temperature={s['temperature']}, top_p={s['top_p']}, max_new_tokens={s['max_new_tokens']},
  seed={s['seed']} (per-prompt seeds derived from it)
- **Reward**: {scorers}; normalize: `{sel.get('normalize', 'none')}`
- **Rule**: `{sel['rule']}` {sel.get('params') or ''}
- **Filters**: {', '.join(filters) if filters else 'none'}
- **Versions**: {', '.join(f'{k} {v}' for k, v in manifest.get('versions', {}).items())}

| prompts in | loaded | candidates | scores (errors) | pairs | prompts paired | prompts dropped |
|---|---|---|---|---|---|---|
{counts}

### Pair audit

| check | value |
|---|---|
{audit or '| pairs | 0 |'}

### Drops by reason

| stage | reason | rows | meaning |
|---|---|---|---|
{drops or '| - | - | 0 | |'}

## Files

`pairs.parquet` (this dataset: {columns}), `candidates.parquet` (every response), `scores.parquet` (one row per
candidate and scorer), `drops.parquet`, `manifest.json` (full config, versions, timings), `report.html`
and `plots/` (reward distributions, margins).

## Use with TRL

`prompt`, `chosen` and `rejected` are conversational message lists, the format `trl.DPOTrainer` takes as is:

```python
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer

ds = load_dataset("parquet", data_files="{manifest['run_dir']}/pairs.parquet", split="train")
# or load_dataset("{manifest['run_dir']}") through this card's `configs`
trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="dpo"), train_dataset=ds, processing_class=tokenizer)
```

`weight` (1.0 unless the rule weights pairs) and `tier` (curriculum order) are optional extras; `ches`,
`ln_ches`, `implicit_margin` and `dual_margin_p` are set when the matching filter ran.

## License

Unknown: it follows from the licenses of the prompt source and of the model's outputs. Set `license` above
before sharing.
"""
