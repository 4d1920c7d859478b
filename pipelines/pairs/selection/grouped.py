"""Per-prompt work on integer codes instead of strings.

One hash factorization of prompt_id into integer codes (`prompt_codes`), then numpy passes over (codes, numbers):
np.minimum.at / np.bincount are O(n) per pass, where pandas sorts and groupbys over 1M arrow strings cost seconds.
Rules use these to pick rows; `pairs_from_rows` turns the picked positions into a pairs frame.
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import pyarrow as pa

# optional pair columns: positions of chosen/rejected in the pool the rule was given (see pairs_from_rows)
ROW_COLUMNS = ("_chosen_pos", "_rejected_pos")


def prompt_codes(prompt_ids: pd.Series, sort: bool = True) -> tuple[np.ndarray, pd.Index]:
    """(code per row, unique prompt ids): uniques[codes] == prompt_ids. sort=True numbers prompts in sorted
    prompt_id order (the order of a sort_values/groupby result); sort=False in order of first appearance.
    A missing prompt id is a ValueError (first_per_prompt and stats take the pandas path for those).

    select() factorizes the same column in prepare, in the rule and in finish; arrow arrays are immutable, so the
    last result is kept for as long as the arrow array it came from is alive (weak reference, checked by identity)."""
    arr = prompt_ids.array.__arrow_array__() if hasattr(prompt_ids.array, "__arrow_array__") else None
    global _LAST_CODES
    last = _LAST_CODES
    if arr is not None and last is not None and last[0]() is arr:
        codes, uniques = last[1]
    else:
        codes, uniques = pd.factorize(prompt_ids)
        if len(codes) and codes.min() < 0:
            raise ValueError(f"{int((codes < 0).sum())} rows have no prompt_id")
        codes.flags.writeable = False  # shared through the cache
        if isinstance(arr, pa.ChunkedArray):
            _LAST_CODES = (weakref.ref(arr), (codes, uniques))
    if sort and len(uniques) > 1:
        order = uniques.argsort()  # sorts the (few) unique ids, not the rows
        if (np.diff(order) != 1).any():
            rank = np.empty(len(order), dtype=np.intp)
            rank[order] = np.arange(len(order))
            codes, uniques = rank[codes], uniques[order]
    return codes, uniques


_LAST_CODES: tuple | None = None


def group_extreme(codes: np.ndarray, n_groups: int, values: np.ndarray, lowest: bool = True) -> np.ndarray:
    """Per-group min (or max) of values; groups without rows get +inf (-inf). NaN values must be removed first."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(n_groups, np.inf if lowest else -np.inf)
    (np.minimum if lowest else np.maximum).at(out, codes, values)
    return out


def first_rows(codes: np.ndarray, n_groups: int, keys: list[tuple[np.ndarray, bool]],
               rows: np.ndarray | None = None) -> np.ndarray:
    """Position of each group's first row in the order a stable sort by keys [(values, ascending), ...] gives
    (NaN last, as pandas sorts), or -1 for a group with no row. rows: the positions to consider (default all).

    No sort: each key keeps, per group, the rows equal to the group's best value (np.minimum.at), and the lowest
    remaining position wins, which is exactly the first row of a stable sort."""
    rows = None if rows is None else np.asarray(rows, dtype=np.intp)  # None: all rows (saves the gathers)
    for values, ascending in keys:
        v = np.asarray(values) if rows is None else np.asarray(values)[rows]
        if v.dtype.kind == "f":
            nan = np.isnan(v)
            if nan.any():  # NaN sorts last whatever the direction: first keep the non-NaN rows of each group
                rows, v = _keep_best(codes, n_groups, rows, nan.astype(np.float64), v)
                v = np.where(np.isnan(v), 0.0, v)
        elif v.dtype.kind not in "biu":
            raise TypeError(f"first_rows needs numeric keys, got {v.dtype}")
        v = np.asarray(v, dtype=np.float64) if ascending else -np.asarray(v, dtype=np.float64)
        rows, _ = _keep_best(codes, n_groups, rows, v)
    if rows is None:  # no keys
        rows = np.arange(len(codes))
    first = np.full(n_groups, len(codes), dtype=np.intp)
    np.minimum.at(first, codes[rows], rows)
    return np.where(first == len(codes), -1, first)


def _keep_best(codes, n_groups, rows, v, carry=None):
    """The rows (None = all) whose v equals their group's minimum of v, and carry at those rows."""
    c = codes if rows is None else codes[rows]
    keep = v == group_extreme(c, n_groups, v)[c]
    kept = np.flatnonzero(keep) if rows is None else rows[keep]
    return kept, (None if carry is None else carry[keep])


def pairs_from_rows(pool: pd.DataFrame, chosen: np.ndarray, rejected: np.ndarray) -> pd.DataFrame:
    """Pairs frame from per-group row positions (-1 = no row: the group gets no pair), in group order.

    It also carries the positions (ROW_COLUMNS) so that `finish` finds the used candidates without matching
    1M candidate id strings; `finish` removes them."""
    both = (chosen >= 0) & (rejected >= 0)
    c, r = chosen[both], rejected[both]
    ids, rewards = pool["candidate_id"].array, pool["reward"].to_numpy(dtype=np.float64)
    return pd.DataFrame({"prompt_id": pool["prompt_id"].array.take(c), "chosen_id": ids.take(c),
                         "rejected_id": ids.take(r), "chosen_score": rewards[c], "rejected_score": rewards[r],
                         ROW_COLUMNS[0]: c, ROW_COLUMNS[1]: r})


def group_stats(codes: np.ndarray, n_groups: int, rewards: np.ndarray, ddof: int = 0) -> dict[str, np.ndarray]:
    """Per-group size (non-NaN rewards), mean, std (ddof; 0 where undefined), min, max; NaN rewards skipped as
    pandas does. Two passes (mean, then squared deviations) with np.bincount."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ok = ~np.isnan(rewards)
    c, r = (codes, rewards) if ok.all() else (codes[ok], rewards[ok])
    n = np.bincount(c, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.bincount(c, weights=r, minlength=n_groups) / n
        var = np.bincount(c, weights=(r - mu[c]) ** 2, minlength=n_groups) / (n - ddof)
    sigma = np.where(n - ddof > 0, np.sqrt(np.where(var >= 0, var, 0.0)), 0.0)
    rmin, rmax = group_extreme(c, n_groups, r), group_extreme(c, n_groups, r, lowest=False)
    empty = n == 0
    rmin[empty] = rmax[empty] = np.nan
    return {"size": n, "mu": mu, "sigma": sigma, "rmin": rmin, "rmax": rmax}
