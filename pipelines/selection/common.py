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

import weakref

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schema

PAIR_COLUMNS = ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score", "weight", "tier"]
EPS = 1e-12
# optional pair columns: positions of chosen/rejected in the pool the rule was given (see pairs_from_rows)
ROW_COLUMNS = ("_chosen_pos", "_rejected_pos")


def setdiff(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Sorted unique values of a not in b. Hash-based: np.setdiff1d on object (string) arrays falls back to a
    per-element loop in numpy 2 (O(n*m): hours for 100k prompts)."""
    return np.asarray(pd.Index(pd.unique(a)).difference(pd.Index(pd.unique(b))), dtype=object)


def isin(values: pd.Series, among) -> pd.Series:
    """values.isin(among), one hash table: pandas-3 arrow-string isin converts `among` one Python scalar at a
    time (most of select's time at 1M candidates). Strings go through pyarrow.compute.is_in (nulls match nulls,
    as in pandas); anything else through object arrays."""
    if isinstance(values.dtype, pd.StringDtype):
        try:
            arr = pa.array(values.array)
            if isinstance(among, (pd.Series, pd.Index)) and isinstance(among.dtype, pd.StringDtype):
                value_set = pa.array(among.array).cast(arr.type)
            else:
                value_set = pa.array(_objects(among), type=arr.type, from_pandas=True)
            found = pc.is_in(arr, value_set=value_set)
            return pd.Series(found.to_numpy(zero_copy_only=False), index=values.index)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # a non-string in `among`: the generic path below compares it as pandas would
    obj = pd.Series(values.to_numpy(dtype=object), index=values.index, dtype=object)
    return obj.isin(_objects(among))


def _objects(values) -> np.ndarray:
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy(dtype=object)
    return np.asarray(values, dtype=object)


def empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c.endswith("_id") else "float64") for c in PAIR_COLUMNS})


# --- per-prompt work on integer codes -------------------------------------------------------------------------
# Everything below replaces string sorts and pandas groupby over prompt_id by one hash factorization of prompt_id
# into integer codes, then numpy passes over (codes, numbers): np.minimum.at / np.bincount are O(n) per pass.

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


def _numeric_keys(df: pd.DataFrame, columns: list[str]) -> bool:
    return all(isinstance(df[c].dtype, np.dtype) and df[c].dtype.kind in "biuf" for c in columns)


def first_per_prompt(df: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """The first row of each prompt after sorting by `by` (stable; sample_index breaks remaining ties), in
    prompt_id order. Numeric keys go through `first_rows` (no sort); anything else through a pandas sort."""
    cols = [*by, "sample_index"]
    if len(df) and _numeric_keys(df, cols) and not df["prompt_id"].isna().any():
        codes, uniques = prompt_codes(df["prompt_id"])
        first = first_rows(codes, len(uniques), [(df[c].to_numpy(), a) for c, a in zip(cols, [*ascending, True])])
        return df.iloc[first[first >= 0]]
    order = df.sort_values(["prompt_id", *by, "sample_index"], ascending=[True, *ascending, True], kind="stable")
    return order.drop_duplicates("prompt_id", keep="first")


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


def stats(pool: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """Per-prompt mean and std of rewards, broadcast back to rows (population std by default, ddof=0)."""
    if pool["prompt_id"].isna().any():
        g = pool.groupby("prompt_id")["reward"]
        return pd.DataFrame({"mu": g.transform("mean"), "sigma": g.transform("std", ddof=ddof).fillna(0.0),
                             "rmin": g.transform("min"), "rmax": g.transform("max")}, index=pool.index)
    codes, uniques = prompt_codes(pool["prompt_id"], sort=False)
    s = group_stats(codes, len(uniques), pool["reward"].to_numpy(dtype=np.float64), ddof)
    return pd.DataFrame({k: s[k][codes] for k in ("mu", "sigma", "rmin", "rmax")}, index=pool.index)


def format_g6(values) -> pa.Array:
    """[f"{v:.6g}" for v in values] as an arrow string array, without a Python loop.

    %.6g prints a value rounded to 6 significant digits in its shortest form, and positionally when its decimal
    exponent is in [-4, 6); there that is arrow's shortest float-to-string of the double nearest to the rounded
    decimal (m / 10^k, k <= 9, is exact division: that double). Values whose rounding is within 1e-6 of a half
    (where a*10^k's own rounding error could flip it), exponent-form values, inf and NaN go through Python."""
    x = np.asarray(values, dtype=np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log10(a))
    e = np.clip(np.nan_to_num(e, nan=0.0, posinf=5.0, neginf=0.0), -4, 5).astype(np.intp)
    scaled = a * _POW10[5 - e]
    off = (scaled >= 1e6).view(np.int8) - (scaled < 1e5).view(np.int8)  # log10 is off by one next to 10^k
    if off.any():
        e = np.clip(e + off, -4, 5)
        scaled = a * _POW10[5 - e]
    m = np.rint(scaled)
    with np.errstate(invalid="ignore"):  # inf - inf
        python = ~np.isfinite(x) | ((a > 0) & ((np.abs(scaled - m) > 0.5 - 1e-6) | (scaled < 1e5)
                                               | (m > 1e6) | ((m == 1e6) & (e == 5))))
    rounded = np.where(a > 0, np.copysign(m / _POW10[5 - e], x), x)
    rounded[python] = 0.0
    out = pc.cast(pa.array(rounded), pa.string())
    at = np.flatnonzero(python)
    if len(at) > 1000:
        out = pc.replace_with_mask(out, pa.array(python), pa.array([f"{v:.6g}" for v in x[at].tolist()]))
    elif len(at):  # usually a handful: splice them in (replace_with_mask rewrites the whole array: 10x slower)
        pieces, start = [], 0
        for i, v in zip(at.tolist(), x[at].tolist()):
            pieces += [out.slice(start, i - start), pa.array([f"{v:.6g}"], pa.string())]
            start = i + 1
        out = pa.concat_arrays([*pieces, out.slice(start)])
    return out


_POW10 = 10.0 ** np.arange(10)


def _join(*parts) -> pa.Array:
    """Element-wise concatenation of arrow string arrays and str scalars."""
    return pc.binary_join_element_wise(*parts, "")


def prepare(pool: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid pool (prompts a rule can pair) and drop rows for everything else."""
    if pool["prompt_id"].isna().any():
        raise ValueError(f"{int(pool['prompt_id'].isna().sum())} pool rows have no prompt_id")
    drops = []
    rewards = pool["reward"].to_numpy(dtype=np.float64)
    bad = np.isnan(rewards)
    if bad.any():
        e = pool[bad]
        drops.append(schema.drop_rows(e["prompt_id"], "select", "score_error", e["error"].fillna("no reward"),
                                      rule=rule, candidate_ids=e["candidate_id"]))
    codes, uniques = prompt_codes(pool["prompt_id"], sort=False)  # prompts in order of first appearance
    s = group_stats(codes, len(uniques), rewards)
    n_valid = s["size"]
    few = np.flatnonzero(n_valid < 2)
    if len(few):
        total = np.bincount(codes, minlength=len(uniques))
        drops.append(schema.drop_rows(uniques[few], "select", "too_few_valid",
                                      _join(_str(n_valid[few]), " valid of ", _str(total[few]), " responses"),
                                      rule=rule))
    spread = s["rmax"] - s["rmin"]
    flat = np.flatnonzero((n_valid >= 2) & (spread <= EPS))
    if len(flat):
        flat = flat[uniques[flat].argsort()]  # in prompt_id order, as a groupby lists them
        drops.append(schema.drop_rows(uniques[flat], "select", "zero_variance",
                                      _join("all ", _str(n_valid[flat]), " rewards = ", format_g6(s["rmax"][flat])),
                                      rule=rule))
    keep = ~bad & ((n_valid >= 2) & (spread > EPS))[codes]
    valid = pool.copy(deep=False) if keep.all() else pool[keep]
    return valid, (pd.concat(drops, ignore_index=True) if drops else schema.empty(schema.DROPS))


def _str(ints: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(ints, dtype=np.int64)), pa.string())


def finish(pool: pd.DataFrame, valid: pd.DataFrame, pairs: pd.DataFrame, rule: str):
    """Drop tied pairs; record valid candidates of paired prompts that no pair used; fill weight/tier."""
    pairs = pairs.copy()
    for col, default in (("weight", 1.0), ("tier", 0)):
        if col not in pairs:
            pairs[col] = default
    pairs["weight"] = pairs["weight"].fillna(1.0).astype("float64")
    pairs["tier"] = pairs["tier"].fillna(0).astype("int32")
    drops = []
    tie = ((pairs["chosen_score"] - pairs["rejected_score"]).abs() <= EPS).to_numpy()
    if tie.any():
        t = pairs[tie]
        drops.append(schema.drop_rows(t["prompt_id"], "select", "tie",
                                      _join("chosen and rejected both ", format_g6(t["chosen_score"])), rule=rule))
        pairs = pairs[~tie]
    codes, uniques = prompt_codes(valid["prompt_id"], sort=False)
    paired = np.zeros(len(uniques), dtype=bool)
    rows = [pairs[c].to_numpy() for c in ROW_COLUMNS if c in pairs]
    if len(rows) == 2:  # the rule told where its pairs are: no id matching
        pairs = pairs.drop(columns=list(ROW_COLUMNS))
        used = np.zeros(len(valid), dtype=bool)
        for r in rows:
            used[r] = True
        paired[codes[rows[0]]] = True
    else:
        used = isin(valid["candidate_id"], pd.concat([pairs["chosen_id"], pairs["rejected_id"]])).to_numpy()
        at = uniques.get_indexer(pd.unique(pairs["prompt_id"]))
        paired[at[at >= 0]] = True
    # a prompt that got no pair at all (all its pairs tied, or the rule found none) must still be accounted for
    if not paired.all():
        unpaired = uniques[~paired].sort_values()
        if drops:
            unpaired = unpaired[~isin(pd.Series(unpaired), drops[0]["prompt_id"]).to_numpy()]
        if len(unpaired):
            drops.append(schema.drop_rows(unpaired, "select", "tie", "rule produced no pair with distinct rewards",
                                          rule=rule))
    left = paired[codes] & ~used
    if left.any():
        drops.append(schema.drop_rows(valid["prompt_id"].array[left], "select", "not_selected",
                                      _join("reward ", format_g6(valid["reward"].to_numpy()[left])), rule=rule,
                                      candidate_ids=valid["candidate_id"].array[left]))
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
