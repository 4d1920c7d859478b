"""Figures of one build_pairs run (PNG): what a user checks before training on the pairs.

- rewards.png: per-prompt reward distributions for a sample of prompts, with mu, mu - 2 sigma (the points the
  mu_2sigma rule works with) and the chosen and rejected responses marked;
- margins.png: histogram of the pairs' reward margins (chosen - rejected);
- ches.png: histogram of the (LN-)CHES the `ches` filter ranked by, kept and dropped pairs stacked, when it ran.

Plain matplotlib on the Agg backend, imported when a figure is drawn (never at import time). Inputs are the run's
tables, so the figures can be redrawn from any finished run directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import schema

# the detail the ches filter writes on a dropped pair: "pair <c> > <r>: ln_ches -12.3 in the top 1 of 10"
_CHES_DETAIL = re.compile(r"\b(ln_ches|ches) (-?[0-9.eE+-]+|nan|inf|-inf) ")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)  # no display: files only, safe in worker threads and on servers
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def prompt_label(messages, width: int = 48) -> str:
    """The last user message, shortened to one line."""
    text = next((m["content"] for m in reversed(list(messages)) if m["role"] == "user"), "") or ""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def sample_prompts(pool: pd.DataFrame, pairs: pd.DataFrame, n: int, seed: int = 0) -> list[str]:
    """Up to n prompt ids with a valid reward, paired prompts first; a seeded sample, stable across reruns."""
    sample = PromptSample(n, seed)
    sample.offer(pool.loc[pool["reward"].notna(), "prompt_id"].unique(), pairs["prompt_id"].unique())
    return sample.picked()


class PromptSample:
    """The prompts the reward figure shows, drawn while a run streams by: the n paired prompts with the smallest
    hash(seed, prompt_id), then (when fewer are paired) the unpaired scored ones by the same hash. Offered batch by
    batch it keeps n ids per group, and whatever the batches, the same ids come out."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed
        self._best: dict[bool, list[tuple[str, str]]] = {True: [], False: []}  # paired? -> [(key, prompt_id)]

    def _key(self, prompt_id: str) -> str:
        import hashlib
        return hashlib.blake2b(f"{self.seed}:{prompt_id}".encode(), digest_size=8).hexdigest()

    def offer(self, scored_ids, paired_ids) -> None:
        """Prompts with a valid reward, and those of them (or more) that have a pair."""
        paired = set(np.asarray(paired_ids, dtype=object).tolist())
        for pid in set(np.asarray(scored_ids, dtype=object).tolist()):
            group = self._best[pid in paired]
            group.append((self._key(pid), pid))
        for flag, group in self._best.items():
            self._best[flag] = sorted(set(group))[:self.n]

    def picked(self) -> list[str]:
        ids = [p for _, p in self._best[True]] + [p for _, p in self._best[False]]
        return ids[:self.n]


def reward_distributions(pool: pd.DataFrame, pairs: pd.DataFrame, prompts: pd.DataFrame, path: Path,
                         n_prompts: int = 12, ddof: int = 0, seed: int = 0,
                         prompt_ids: list[str] | None = None) -> Path | None:
    """One row per sampled prompt: every response's reward, mu and mu - 2 sigma of the prompt's valid rewards,
    and the chosen/rejected responses of its first pair. None when no prompt has a valid reward.
    prompt_ids: the prompts to show (default: sample_prompts over the pool); the pool needs only their rows."""
    ids = sample_prompts(pool, pairs, n_prompts, seed) if prompt_ids is None else list(prompt_ids)
    if not ids:
        return None
    plt = _pyplot()
    valid = pool[pool["reward"].notna() & pool["prompt_id"].isin(ids)]
    rewards = valid.groupby("prompt_id")["reward"]  # a dozen prompts: plain pandas
    valid = valid.assign(mu=rewards.transform("mean"), sigma=rewards.transform("std", ddof=ddof).fillna(0.0))
    first_pair = pairs.drop_duplicates("prompt_id").set_index("prompt_id")
    labels = prompts.set_index("prompt_id")["messages"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(ids) + 1.4))
    for y, pid in enumerate(ids):
        rows = valid[valid["prompt_id"] == pid]
        ax.scatter(rows["reward"], np.full(len(rows), y), s=22, color="0.55", zorder=2,
                   label="response" if y == 0 else None)
        mu, sigma = rows["mu"].iloc[0], rows["sigma"].iloc[0]
        ax.scatter([mu], [y], marker="|", s=260, color="tab:blue", zorder=3, label="mu" if y == 0 else None)
        ax.scatter([mu - 2 * sigma], [y], marker="|", s=260, color="tab:orange", zorder=3,
                   label="mu - 2 sigma" if y == 0 else None)
        if pid in first_pair.index:
            p = first_pair.loc[pid]
            ax.scatter([p["chosen_score"]], [y], s=110, facecolors="none", edgecolors="tab:green", linewidths=2,
                       zorder=4, label="chosen" if y == 0 else None)
            ax.scatter([p["rejected_score"]], [y], s=110, marker="X", color="tab:red", zorder=4,
                       label="rejected" if y == 0 else None)
    ax.set_yticks(range(len(ids)), [prompt_label(labels.get(pid, [])) for pid in ids], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("reward (weighted sum of scorers)")
    ax.set_title(f"Rewards of {len(ids)} sampled prompts (sigma with ddof={ddof})")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(ids), 1)), ncol=5, fontsize=8,
              frameon=False)
    return _save(fig, path)


def margin_histogram(pairs: pd.DataFrame, path: Path) -> Path | None:
    if pairs.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    margins = pairs["margin"].to_numpy(dtype=np.float64)
    ax.hist(margins, bins=min(40, max(5, len(margins) // 3)), color="tab:blue", alpha=0.85)
    ax.axvline(float(np.median(margins)), color="k", linestyle="--", linewidth=1,
               label=f"median {np.median(margins):.3g}")
    ax.set_xlabel("margin = chosen reward - rejected reward")
    ax.set_ylabel("pairs")
    ax.set_title(f"Pair margins ({len(margins)} pairs)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def ches_values(pairs: pd.DataFrame, drops: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """{"ln_ches"|"ches": {"kept": values, "dropped": values}} for the scores the ches filter computed.

    Kept pairs carry both scores as columns of pairs.parquet; a dropped pair's score (the one the filter used)
    is in its drop detail. Empty when no ches filter ran."""
    out: dict[str, dict[str, list]] = {}
    for column in ("ln_ches", "ches"):
        if column in pairs and pairs[column].notna().any():
            out.setdefault(column, {"kept": [], "dropped": []})["kept"] = pairs[column].dropna().tolist()
    ches_drops = drops[drops["reason"] == "ches_filtered"] if len(drops) else drops
    for detail in ches_drops.get("detail", pd.Series(dtype=object)).fillna(""):
        for column, value in _CHES_DETAIL.findall(detail):  # a prompt-level row lists all its removed pairs
            out.setdefault(column, {"kept": [], "dropped": []})["dropped"].append(float(value))
    return {c: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()} for c, d in out.items()}


def ches_histogram(pairs: pd.DataFrame, drops: pd.DataFrame, path: Path) -> Path | None:
    """The score the filter ranked by (the one its drop details name; LN-CHES when it dropped nothing)."""
    values = ches_values(pairs, drops)
    if not values:
        return None
    used = [c for c in ("ln_ches", "ches") if c in values and len(values[c]["dropped"])]
    column = used[0] if used else ("ln_ches" if "ln_ches" in values else "ches")
    kept, dropped = values[column]["kept"], values[column]["dropped"]
    both = np.concatenate([kept, dropped])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(both, bins=min(40, max(5, len(both) // 3)))
    ax.hist([kept, dropped], bins=bins, stacked=True, color=["tab:blue", "tab:red"],
            label=[f"kept ({len(kept)})", f"dropped ({len(dropped)})"])
    ax.set_xlabel(("LN-CHES" if column == "ln_ches" else "CHES") + " (higher: more likelihood displacement)")
    ax.set_ylabel("pairs")
    ax.set_title(f"CHES filter: {len(both)} pairs scored")
    ax.legend(fontsize=8)
    return _save(fig, path)


# the columns the figures read: never the texts, which are most of a large run's bytes
SCORE_COLUMNS = ["prompt_id", "chosen_score", "rejected_score"]
CHES_COLUMNS = ["ches", "ln_ches"]


def run_figures(run_dir: Path, manifest: dict, pool: pd.DataFrame, n_prompts: int = 12,
                prompt_ids: list[str] | None = None) -> dict[str, Path]:
    """Draw every figure that applies into run_dir/plots; {name: path}. `pool` is rewards.combine's output (of at
    least the `prompt_ids` to show, when given). Reads only the columns and rows the figures use: the margins,
    the scores of the shown prompts' pairs, the CHES scores and the CHES filter's drop rows when it ran, the
    messages of the shown prompts (a million pairs cost ~8 bytes each here, not their texts)."""
    run_dir = Path(run_dir)
    margins = read_run_table(run_dir, "pairs", ["margin"])
    if prompt_ids is None:
        ids = sample_prompts(pool, read_run_table(run_dir, "pairs", ["prompt_id"]), n_prompts)
    else:
        ids = list(prompt_ids)
    where = ("prompt_id", ids) if ids else None
    shown = read_run_table(run_dir, "pairs", SCORE_COLUMNS, rows_in=where)
    prompts = read_run_table(run_dir, "prompts", ["prompt_id", "messages"], rows_in=where)
    selection = manifest["config"]["selection"]
    ddof = int(selection.get("params", {}).get("ddof", 0)) if selection["rule"] == "mu_2sigma" else 0
    ches_ran = any(f["name"] == "ches" for f in selection.get("pair_filters", []))
    ches = read_run_table(run_dir, "pairs", CHES_COLUMNS) if ches_ran else pd.DataFrame(columns=CHES_COLUMNS)
    drops = read_run_table(run_dir, "drops", ["reason", "detail"], filters=[("reason", "=", "ches_filtered")]) \
        if ches_ran else pd.DataFrame(columns=["reason", "detail"])
    plots = run_dir / "plots"
    drawn = {
        "rewards": reward_distributions(pool, shown, prompts, plots / "rewards.png", n_prompts, ddof,
                                        prompt_ids=ids),
        "margins": margin_histogram(margins, plots / "margins.png"),
        "ches": ches_histogram(ches, drops, plots / "ches.png"),
    }
    return {name: path for name, path in drawn.items() if path is not None}


def read_run_table(run_dir, name: str, columns: list[str] | None = None, filters=None,
                   rows_in: tuple[str, list] | None = None) -> pd.DataFrame:
    """A table of a run directory with the file's own schema (older runs may lack columns added since: those
    come back as nulls). columns: read only these; filters: pyarrow row filters (only matching rows); rows_in:
    (column, values), only the rows whose column is in values, read one row group at a time (io.read_rows_in:
    a few rows of a large file)."""
    import pyarrow.parquet as pq
    path = Path(run_dir) / f"{name}.parquet"
    if not path.exists():
        df = schema.empty(schema.TABLES[name])
        return df[columns] if columns else df
    present = pq.read_schema(path).names
    wanted = [c for c in columns if c in present] if columns else None
    if rows_in is not None:
        from pipelines.core import io
        df = io.read_rows_in(path, rows_in[0], rows_in[1], wanted).to_pandas()
    else:
        df = pq.read_table(path, columns=wanted, filters=filters).to_pandas()
    for c in (columns or []):
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype=schema.empty(schema.TABLES[name])[c].dtype)
    return df[columns] if columns else df
