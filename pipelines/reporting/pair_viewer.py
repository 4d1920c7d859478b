"""The pair viewer of report.html: a seeded sample of the run's pairs, to read chosen against rejected.

Each pair is a <details> element, so the page needs no script and stays self-contained: its summary line shows
the margin and the prompt; opened, it shows the whole prompt conversation, the chosen and the rejected response
side by side with their rewards and per-scorer scores (or scorer errors), the pair's rule, tier and weight, and
the prompt's other candidates with why each was not used (their drop rows). Every text is HTML-escaped: a
response is data, never markup (a response holding `<script>` shows as text and does not run).

The sample is stable across reruns (seeded), in the order of pairs.parquet; a long text is cut at `max_chars`
with a note of how much was left out (the Parquet files have it whole).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

STYLE = """
details.pair{border:1px solid #ccc;border-radius:4px;margin:0.4em 0;padding:0.3em 0.6em}
details.pair>summary{cursor:pointer}
.margin{display:inline-block;min-width:7em;font-family:monospace}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:0.8em}
.side{border-top:3px solid #999;padding-top:0.2em;min-width:0}
.side.chosen{border-color:#2a7}
.side.rejected{border-color:#c44}
.pair pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:0.4em;margin:0.2em 0}
.role{font-size:0.8em;color:#666;text-transform:uppercase}
.pair table{font-size:0.9em}
"""


def _fmt(value) -> str:
    return "null" if value is None or pd.isna(value) else f"{float(value):.4g}"


def _text(value, max_chars: int) -> str:
    text = "" if value is None else str(value)
    if len(text) <= max_chars:
        return escape(text)
    return escape(text[:max_chars]) + f"<em>[… {len(text) - max_chars} more characters]</em>"


def _read(run_dir: Path, name: str, columns: list[str], prompt_ids: list[str]) -> pd.DataFrame:
    """The rows of a run table that belong to the sampled prompts (candidates.parquet may be large: one row group
    in memory at a time)."""
    from pipelines.core import io, schema
    path = run_dir / f"{name}.parquet"
    if not path.exists():
        return schema.empty(schema.TABLES[name])[columns]
    return io.read_rows_in(path, "prompt_id", prompt_ids, columns).to_pandas()


def sample_rows(total: int, n: int, seed: int = 0) -> np.ndarray:
    """Up to n row numbers of `total`, seeded, in file order."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def sample_pairs(pairs: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to n pairs, seeded, in file order."""
    return pairs.iloc[sample_rows(len(pairs), n, seed)]


def _shown_pairs(path: Path, n: int, seed: int) -> tuple[pd.DataFrame, int]:
    """(sample_pairs of the file, its number of pairs), reading only the row groups that hold the sampled rows, one
    at a time (a million-pair run's texts never come into memory at once)."""
    import pyarrow as pa

    from pipelines.core import io, schema
    if not path.exists():
        return pd.DataFrame(), 0
    reader = io.RowReader(path, schema.PAIRS)
    # take: a copy of the row, so the rows kept do not keep their whole decoded row groups alive
    rows = [reader.rows(int(i), int(i) + 1).take([0]) for i in sample_rows(reader.num_rows, n, seed)]
    return (pa.concat_tables(rows).to_pandas() if rows else pd.DataFrame()), reader.num_rows


def pair_viewer_html(run_dir, pool: pd.DataFrame | None = None, n: int = 30, seed: int = 0,
                     max_chars: int = 6000) -> str:
    """The viewer's section of report.html for the run in run_dir. pool: rewards.combine's frame (candidate_id,
    reward), the rewards selection saw; without it the other candidates show no reward."""
    import pyarrow.parquet as pq
    run_dir = Path(run_dir)
    path = run_dir / "pairs.parquet"
    if path.exists() and not {"prompt", "chosen", "rejected"} <= set(pq.read_schema(path).names):
        return "<h2 id='pairs'>Pairs</h2><p>This run's pairs.parquet holds no texts to show.</p>"
    shown, total = _shown_pairs(path, n, seed)
    if shown.empty:
        return "<h2 id='pairs'>Pairs</h2><p>This run has no pairs (see the drops above).</p>"
    ids = sorted(set(shown["prompt_id"]))
    candidates = _read(run_dir, "candidates", ["candidate_id", "prompt_id", "sample_index", "text",
                                               "finish_reason"], ids)
    scores = _read(run_dir, "scores", ["candidate_id", "prompt_id", "scorer", "score", "error"], ids)
    drops = _read(run_dir, "drops", ["prompt_id", "candidate_id", "stage", "reason", "detail"], ids)
    rewards = ({} if pool is None or pool.empty else dict(zip(pool["candidate_id"], pool["reward"])))
    by_prompt = {pid: group for pid, group in candidates.groupby("prompt_id", sort=False)}
    scores_of = {cid: group for cid, group in scores.groupby("candidate_id", sort=False)}
    drops_of = {pid: group for pid, group in drops.groupby("prompt_id", sort=False)}
    finish = dict(zip(candidates["candidate_id"], candidates["finish_reason"]))

    def scorer_line(cid: str) -> str:
        rows = scores_of.get(cid)
        if rows is None:
            return ""
        parts = [f"{escape(str(r.scorer))} {_fmt(r.score)}" if r.error is None or pd.isna(r.error)
                 else f"{escape(str(r.scorer))} <em>error: {escape(str(r.error)[:200])}</em>"
                 for r in rows.itertuples(index=False)]
        return " · ".join(parts)

    def side(kind: str, cid: str, score, message) -> str:
        return (f"<div class='side {kind}'><b>{kind}</b> · reward {_fmt(score)} · "
                f"finish {escape(str(finish.get(cid, '?')))}<div class='scores'>{scorer_line(cid)}</div>"
                f"<pre>{_text(message, max_chars)}</pre></div>")

    def others(row) -> str:
        group = by_prompt.get(row.prompt_id)
        prompt_drops = drops_of.get(row.prompt_id, drops.iloc[:0])
        reasons: dict[str, list[str]] = {}
        for d in prompt_drops.itertuples(index=False):
            key = d.candidate_id if isinstance(d.candidate_id, str) else ""
            reasons.setdefault(key, []).append(f"{d.stage}/{d.reason}" + (f": {d.detail}" if d.detail else ""))
        lines = []
        if group is not None:
            for c in group.sort_values("sample_index").itertuples(index=False):
                if c.candidate_id in (row.chosen_id, row.rejected_id):
                    continue
                why = "; ".join(reasons.get(c.candidate_id, [])) or "in another pair, or kept"
                lines.append(f"<tr><td>{int(c.sample_index)}</td><td>{_fmt(rewards.get(c.candidate_id))}</td>"
                             f"<td>{escape(why)}</td><td><pre>{_text(c.text, max_chars // 4)}</pre></td></tr>")
        prompt_level = "".join(f"<p>prompt: {escape(r)}</p>" for r in reasons.get("", []))
        if not lines:
            return prompt_level
        return (f"{prompt_level}<table><thead><tr><th>#</th><th>reward</th><th>not used because</th>"
                f"<th>response</th></tr></thead><tbody>{''.join(lines)}</tbody></table>")

    items = []
    for i, row in enumerate(shown.itertuples(index=False)):
        messages = [dict(m) for m in row.prompt]
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        label = " ".join(str(last_user).split())
        label = label if len(label) <= 110 else label[:109] + "…"
        prompt = "".join(f"<div><span class='role'>{escape(str(m['role']))}</span><pre>"
                         f"{_text(m['content'], max_chars)}</pre></div>" for m in messages)
        chosen, rejected = row.chosen[-1]["content"], row.rejected[-1]["content"]
        items.append(
            f"<details class='pair'{' open' if i == 0 else ''}><summary><span class='margin'>margin "
            f"{_fmt(row.margin)}</span> {escape(label)}</summary>"
            f"<p>rule <code>{escape(str(row.rule))}</code> · tier {row.tier} · weight {_fmt(row.weight)} · "
            f"prompt <code>{escape(str(row.prompt_id))}</code></p>{prompt}"
            f"<div class='sides'>{side('chosen', row.chosen_id, row.chosen_score, chosen)}"
            f"{side('rejected', row.rejected_id, row.rejected_score, rejected)}</div>"
            f"<h4>Other candidates of this prompt</h4>{others(row) or '<p>none</p>'}</details>")
    return (f"<h2 id='pairs'>Pairs: {len(shown)} of {total}</h2><p>A seeded sample, in file order; open a "
            f"pair to read its prompt, chosen and rejected side by side.</p>{''.join(items)}")
