"""What every rule shares: validity checks before a rule runs, tie and leftover accounting after it.

Definitions (tested in tests/test_selection.py):
- valid response: every scorer returned a score (no error);
- too_few_valid: fewer than 2 valid responses -> the prompt is dropped;
- zero_variance: all valid rewards equal (max - min <= 1e-12) -> the prompt is dropped (no preference);
- tie: the rule's chosen and rejected have equal rewards -> the pair is dropped;
- not_selected: a valid candidate of a prompt that produced pairs but is in none of them.
Ties *inside* a rule (two responses with the max reward) are broken deterministically by sample_index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import schema

PAIR_COLUMNS = ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score", "weight", "tier"]
EPS = 1e-12


def setdiff(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Sorted unique values of a not in b. Hash-based: np.setdiff1d on object (string) arrays falls back to a
    per-element loop in numpy 2 (O(n*m): hours for 100k prompts)."""
    return np.asarray(pd.Index(pd.unique(a)).difference(pd.Index(pd.unique(b))), dtype=object)


def isin(values: pd.Series, among) -> pd.Series:
    """values.isin(among) through object arrays: pandas-3 arrow-string isin converts `among` one Python scalar
    at a time (most of select's time at 1M candidates); the object path is one hash table."""
    obj = pd.Series(values.to_numpy(dtype=object), index=values.index, dtype=object)
    return obj.isin(np.asarray(among, dtype=object))


def empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c.endswith("_id") else "float64") for c in PAIR_COLUMNS})


def prepare(pool: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid pool (prompts a rule can pair) and drop rows for everything else."""
    drops = []
    bad = pool["reward"].isna()
    if bad.any():
        e = pool[bad]
        drops.append(schema.drop_rows(e["prompt_id"], "select", "score_error", e["error"].fillna("no reward"),
                                      rule=rule, candidate_ids=e["candidate_id"]))
    ok = pool[~bad]
    stats = ok.groupby("prompt_id")["reward"].agg(["size", "min", "max"])
    all_prompts = pool["prompt_id"].unique()
    n_valid = stats["size"].reindex(all_prompts, fill_value=0)
    few = n_valid[n_valid < 2]
    if len(few):
        total = pool.groupby("prompt_id").size()
        drops.append(schema.drop_rows(few.index, "select", "too_few_valid",
                                      [f"{v} valid of {total[p]} responses" for p, v in few.items()], rule=rule))
    flat = stats[(stats["size"] >= 2) & (stats["max"] - stats["min"] <= EPS)]
    if len(flat):
        drops.append(schema.drop_rows(flat.index, "select", "zero_variance",
                                      [f"all {int(n)} rewards = {v:.6g}" for n, v in zip(flat["size"], flat["max"])],
                                      rule=rule))
    keep = stats.index[(stats["size"] >= 2) & (stats["max"] - stats["min"] > EPS)]
    valid = ok[isin(ok["prompt_id"], keep)]
    return valid, (pd.concat(drops, ignore_index=True) if drops else schema.empty(schema.DROPS))


def first_per_prompt(df: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """The first row of each prompt after sorting by `by` (stable; sample_index breaks remaining ties)."""
    order = df.sort_values(["prompt_id", *by, "sample_index"], ascending=[True, *ascending, True], kind="stable")
    return order.drop_duplicates("prompt_id", keep="first")


def stats(pool: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """Per-prompt mean and std of rewards, broadcast back to rows (population std by default, ddof=0)."""
    g = pool.groupby("prompt_id")["reward"]
    return pd.DataFrame({"mu": g.transform("mean"), "sigma": g.transform("std", ddof=ddof).fillna(0.0),
                         "rmin": g.transform("min"), "rmax": g.transform("max")}, index=pool.index)


def finish(pool: pd.DataFrame, valid: pd.DataFrame, pairs: pd.DataFrame, rule: str):
    """Drop tied pairs; record valid candidates of paired prompts that no pair used; fill weight/tier."""
    pairs = pairs.copy()
    for col, default in (("weight", 1.0), ("tier", 0)):
        if col not in pairs:
            pairs[col] = default
    pairs["weight"] = pairs["weight"].fillna(1.0).astype("float64")
    pairs["tier"] = pairs["tier"].fillna(0).astype("int32")
    drops = []
    tie = (pairs["chosen_score"] - pairs["rejected_score"]).abs() <= EPS
    if tie.any():
        t = pairs[tie]
        drops.append(schema.drop_rows(t["prompt_id"], "select", "tie",
                                      [f"chosen and rejected both {v:.6g}" for v in t["chosen_score"]], rule=rule))
        pairs = pairs[~tie]
    # a prompt that got no pair at all (all its pairs tied, or the rule found none) must still be accounted for
    unpaired = setdiff(valid["prompt_id"], pairs["prompt_id"])
    already = set(drops[0]["prompt_id"]) if drops else set()
    missing = [p for p in unpaired if p not in already]
    if missing:
        drops.append(schema.drop_rows(missing, "select", "tie", "rule produced no pair with distinct rewards",
                                      rule=rule))
    used = np.union1d(pairs["chosen_id"].to_numpy(dtype=object), pairs["rejected_id"].to_numpy(dtype=object))
    left = valid[isin(valid["prompt_id"], pairs["prompt_id"]) & ~isin(valid["candidate_id"], used)]
    if len(left):
        # numpy object arrays: iterating arrow-backed strings element by element is slow (900k rows at 1M)
        drops.append(schema.drop_rows(left["prompt_id"].to_numpy(dtype=object), "select", "not_selected",
                                      [f"reward {r:.6g}" for r in left["reward"].tolist()], rule=rule,
                                      candidate_ids=left["candidate_id"].to_numpy(dtype=object)))
    pairs = pairs.assign(margin=pairs["chosen_score"] - pairs["rejected_score"]).reset_index(drop=True)
    return pairs, (pd.concat(drops, ignore_index=True) if drops else schema.empty(schema.DROPS))


def check_accounted(before: pd.DataFrame, after: pd.DataFrame, filter_drops: pd.DataFrame, name: str) -> None:
    """Contract of pair filters: a prompt that loses all its pairs must get a drop row (with the filter's
    reason) from that filter. Breaking it is a bug in the filter, so this raises instead of guessing a reason."""
    gone = setdiff(before["prompt_id"], after["prompt_id"])
    covered = set(filter_drops["prompt_id"]) if len(filter_drops) else set()
    missing = [p for p in gone if p not in covered]
    if missing:
        raise RuntimeError(f"pair filter {name} removed all pairs of {len(missing)} prompts without a drop row")


def hash_uniform(tag: str, seed: int, keys) -> np.ndarray:
    """One uniform in [0, 1) per key (e.g. (prompt_id, sample_index)) from a content hash of (tag, seed, key):
    the same key gets the same draw whatever batch or row order it comes in. Keys must be plain Python values
    (`.tolist()`), since a numpy int would hash as its string."""
    return np.array([int(schema.stable_hash(tag, seed, *k), 16) / 16.0**16 for k in keys], dtype=np.float64)


def valid_pool(ctx, name: str) -> pd.DataFrame:
    """The valid pool the rule saw (SelectionContext.pool), for pair filters that need per-prompt statistics."""
    if ctx is None or getattr(ctx, "pool", None) is None:
        raise ValueError(f"{name} needs the valid pool (SelectionContext.pool, set by selection.select)")
    return ctx.pool
