"""Human-readable summaries of a run's manifest: a terminal block and a Prefect markdown artifact."""

from __future__ import annotations


def _drop_lines(manifest: dict) -> list[tuple[str, str, int]]:
    return [(d["stage"], d["reason"], d["n"]) for d in manifest["counts"]["drops_by_reason"]]


def summary_markdown(manifest: dict) -> str:
    c, t = manifest["counts"], manifest["timings"]
    rows = [
        ("prompts in", c["prompts_in"]), ("prompts loaded", c["prompts_loaded"]),
        ("candidates", c["candidates"]), ("scores (errors)", f"{c['scores']} ({c['score_errors']})"),
        ("pairs out", c["pairs"]), ("prompts paired", c["prompts_paired"]),
        ("prompts dropped", c["prompts_dropped"]),
        ("batches sampled / resumed", f"{manifest['batches']['sampled']} / {manifest['batches']['resumed']}"),
    ]
    lines = [f"# pairsmith run `{manifest['run_id']}`", "", "| stage | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Drops by reason", "", "| stage | reason | rows |", "|---|---|---|"]
    lines += [f"| {s} | {r} | {n} |" for s, r, n in _drop_lines(manifest)] or ["| - | - | 0 |"]
    lines += ["", "## Time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in t.items()]
    lines += ["", f"Output: `{manifest['run_dir']}`"]
    return "\n".join(lines)


def summary_text(manifest: dict) -> str:
    c = manifest["counts"]
    drops = ", ".join(f"{r}={n}" for _, r, n in _drop_lines(manifest)) or "none"
    return (f"pairsmith run {manifest['run_id']}: {c['prompts_in']} prompts -> {c['candidates']} candidates -> "
            f"{c['pairs']} pairs ({c['prompts_paired']} prompts paired, {c['prompts_dropped']} dropped)\n"
            f"drops: {drops}\n"
            f"wall {manifest['wall_seconds']:.1f}s; written to {manifest['run_dir']}/pairs.parquet")
