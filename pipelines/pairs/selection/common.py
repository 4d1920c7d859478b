"""What every rule shares: validity checks before a rule runs, tie and leftover accounting after it.

Definitions (tested in tests/pairs/selection/test_max_min_mu_2sigma.py):
- valid response: every scorer returned a score (no error);
- too_few_valid: fewer than 2 valid responses -> the prompt is dropped;
- zero_variance: all valid rewards equal (max - min <= 1e-12) -> the prompt is dropped (no preference);
- tie: the rule's chosen and rejected have equal rewards -> the pair is dropped;
- not_selected: a valid candidate of a prompt that produced pairs but is in none of them.
Ties *inside* a rule (two responses with the max reward) are broken deterministically by sample_index.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import ids, schema
from pipelines.pairs.selection.details import TEXT, format_g6, ints_to_str, join
from pipelines.pairs.selection.grouped import ROW_COLUMNS, _arrow, groups_of, has_nan, remember

PAIR_COLUMNS = ["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score", "weight", "tier"]
EPS = 1e-12


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


def no_drops() -> pd.DataFrame:
    """An empty DROPS frame (a copy of one made once: schema.empty builds an arrow table each time, ~1 ms)."""
    global _NO_DROPS
    if _NO_DROPS is None:
        _NO_DROPS = schema.empty(schema.DROPS)
    return _NO_DROPS.copy()


_NO_DROPS: pd.DataFrame | None = None


def empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c.endswith("_id") else "float64") for c in PAIR_COLUMNS})


def _numeric_keys(df: pd.DataFrame, columns: list[str]) -> bool:
    return all(isinstance(df[c].dtype, np.dtype) and df[c].dtype.kind in "biuf" for c in columns)


def first_per_prompt(df: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """The first row of each prompt after sorting by `by` (stable; sample_index breaks remaining ties), in
    prompt_id order. Numeric keys go through `Groups.first` (no sort); anything else through a pandas sort."""
    cols = [*by, "sample_index"]
    if len(df) and _numeric_keys(df, cols) and not df["prompt_id"].isna().any():
        groups = groups_of(df["prompt_id"])
        first = groups.first([(df[c].to_numpy(), a) for c, a in zip(cols, [*ascending, True])])[groups.order]
        return df.iloc[first[first >= 0]]
    order = df.sort_values(["prompt_id", *by, "sample_index"], ascending=[True, *ascending, True], kind="stable")
    return order.drop_duplicates("prompt_id", keep="first")


def stats(pool: pd.DataFrame, ddof: int = 0) -> pd.DataFrame:
    """Per-prompt mean and std of rewards, broadcast back to rows (population std by default, ddof=0)."""
    if pool["prompt_id"].isna().any():
        g = pool.groupby("prompt_id")["reward"]
        return pd.DataFrame({"mu": g.transform("mean"), "sigma": g.transform("std", ddof=ddof).fillna(0.0),
                             "rmin": g.transform("min"), "rmax": g.transform("max")}, index=pool.index)
    groups = groups_of(pool["prompt_id"])
    s = groups.stats(pool["reward"].to_numpy(dtype=np.float64), ddof)
    return pd.DataFrame({k: s[k][groups.codes] for k in ("mu", "sigma", "rmin", "rmax")}, index=pool.index)


def prepare(pool: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid pool (prompts a rule can pair) and drop rows for everything else."""
    valid, drops, _ = prepare_rows(pool, rule)
    return valid, drops


def prepare_rows(pool: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """prepare, and the pool positions of the valid rows (None: all of them, in order)."""
    if pool["prompt_id"].isna().any():
        raise ValueError(f"{int(pool['prompt_id'].isna().sum())} pool rows have no prompt_id")
    drops = []
    rewards = pool["reward"].to_numpy(dtype=np.float64)
    any_bad = has_nan(rewards)
    bad = np.isnan(rewards) if any_bad else None
    if any_bad:
        e = pool[bad]
        drops.append(schema.drop_rows(e["prompt_id"], "select", "score_error", e["error"].fillna("no reward"),
                                      rule=rule, candidate_ids=e["candidate_id"]))
    groups = groups_of(pool["prompt_id"])  # prompts in order of first appearance
    if any_bad:
        n_valid = groups.count(~bad)
        rmin = groups.extreme(np.where(bad, np.inf, rewards))
        rmax = groups.extreme(np.where(bad, -np.inf, rewards), lowest=False)
    else:
        n_valid, rmin, rmax = groups.count(), groups.extreme(rewards), groups.extreme(rewards, lowest=False)
    few = np.flatnonzero(n_valid < 2)
    if len(few):
        total = groups.count()
        detail = join(ints_to_str(n_valid[few]), " valid of ", ints_to_str(total[few]), " responses")
        drops.append(schema.drop_rows(groups.ids.take(pa.array(few)), "select", "too_few_valid", detail, rule=rule))
    with np.errstate(invalid="ignore"):  # inf - inf: a prompt without valid rewards (already counted as few)
        spread = rmax - rmin
        flat = np.flatnonzero((n_valid >= 2) & (spread <= EPS))
        keep_group = (n_valid >= 2) & (spread > EPS)
    if len(flat):
        flat = flat[pc.sort_indices(groups.ids.take(pa.array(flat))).to_numpy()]  # in prompt_id order, as a groupby
        drops.append(schema.drop_rows(groups.ids.take(pa.array(flat)), "select", "zero_variance",
                                      join("all ", ints_to_str(n_valid[flat]), " rewards = ", format_g6(rmax[flat])),
                                      rule=rule))
    keep = None if keep_group.all() else groups.broadcast(keep_group)
    if any_bad:
        keep = ~bad if keep is None else keep & ~bad
    if keep is None or keep.all():
        valid, rows = pool.copy(deep=False), None
    else:
        valid, rows = pool[keep], np.flatnonzero(keep)
        remember(valid["prompt_id"], groups.subset(keep))
    return valid, (pd.concat(drops, ignore_index=True) if drops else no_drops()), rows


class RewardTexts:
    """The not_selected detail text ("reward %.6g") of every pool row, formatted on a helper thread while the
    prompt grouping and the rule run: at 1M candidates the texts are the largest single piece of select's work,
    and numpy's and arrow's kernels release the GIL, so a second core does them meanwhile. The rows go in PIECES
    pieces: the helper takes them from the front, and `pick` (the rule is done, the main thread would only wait)
    takes the ones not yet started from the back, so both cores finish the texts together. Rows without a reward
    get a placeholder (they are never not_selected). `pick(pool positions)` returns those rows' texts."""

    MIN_ROWS = 100_000  # below this a thread costs more than it saves
    PIECES = 8
    _executor, _pid = None, None

    def __init__(self, pool: pd.DataFrame):
        import threading
        from concurrent.futures import ThreadPoolExecutor
        rewards = pool["reward"].to_numpy(dtype=np.float64)
        if has_nan(rewards):
            rewards = np.where(np.isnan(rewards), 0.5, rewards)
        if RewardTexts._executor is None or RewardTexts._pid != os.getpid():  # a forked child has no worker
            RewardTexts._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairsmith-details")
            RewardTexts._pid = os.getpid()
        self.rows = len(rewards)
        self._bounds = np.linspace(0, self.rows, self.PIECES + 1).astype(np.intp)
        self._rewards = rewards
        self._texts: list[pa.Array | BaseException | None] = [None] * self.PIECES
        self._next, self._last = 0, self.PIECES - 1  # the helper's next piece, pick's next (from the back)
        self._lock = threading.Lock()
        self._helper = RewardTexts._executor.submit(self._format, True)

    @classmethod
    def start(cls, pool: pd.DataFrame) -> RewardTexts | None:
        return cls(pool) if len(pool) >= cls.MIN_ROWS else None

    def _claim(self, front: bool) -> int | None:
        with self._lock:
            if self._next > self._last:
                return None
            if front:
                self._next += 1
                return self._next - 1
            self._last -= 1
            return self._last + 1

    def _format(self, front: bool) -> None:
        while (i := self._claim(front)) is not None:
            try:
                self._texts[i] = format_g6(self._rewards[self._bounds[i]:self._bounds[i + 1]], "reward ")
            except BaseException as e:  # noqa: BLE001  (handed to pick, which raises it in the caller)
                self._texts[i] = e

    def pick(self, positions: np.ndarray) -> pa.ChunkedArray:
        """The texts of those rows, one chunk per piece (not concatenated: a table takes the chunks as they are,
        and a concatenation would be another 18 MB of fresh pages at 800k rows)."""
        self._format(False)
        self._helper.result()  # the helper's last piece
        mask = np.zeros(self.rows, dtype=bool)
        mask[positions] = True
        kept = []
        for i, texts in enumerate(self._texts):
            if isinstance(texts, BaseException):
                raise texts
            kept.append(texts.filter(pa.array(mask[self._bounds[i]:self._bounds[i + 1]])))
        return pa.chunked_array(kept, type=TEXT)


def finish(pool: pd.DataFrame, valid: pd.DataFrame, pairs: pd.DataFrame, rule: str,
           texts: RewardTexts | None = None, pool_rows: np.ndarray | None = None, kept: np.ndarray | None = None):
    """Drop tied pairs; record valid candidates of paired prompts that no pair used; fill weight/tier.
    texts: the pool's reward texts (RewardTexts), valid's row i being pool row pool_rows[i] (None: row i).
    kept: valid's rows that get rows here (None: all); the others the rule accounted for with drop rows of its own
    (a prompt without kept rows gets no tie row, a candidate not kept no not_selected row)."""
    n = len(pairs)
    data = {c: pairs[c].array for c in pairs.columns if c not in ROW_COLUMNS}  # one frame at the end, no copies
    data["weight"] = pairs["weight"].fillna(1.0).to_numpy(dtype="float64") if "weight" in pairs else np.ones(n)
    data["tier"] = pairs["tier"].fillna(0).to_numpy().astype("int32") if "tier" in pairs else np.zeros(n, "int32")
    chosen_score, rejected_score = (pairs[c].to_numpy(dtype="float64") for c in ("chosen_score", "rejected_score"))
    rows = [pairs[c].to_numpy() for c in ROW_COLUMNS if c in pairs]
    drops = []
    tie = np.abs(chosen_score - rejected_score) <= EPS
    if tie.any():
        drops.append(schema.drop_rows(data["prompt_id"][tie], "select", "tie",
                                      join("chosen and rejected both ", format_g6(chosen_score[tie])), rule=rule))
        data = {c: v[~tie] for c, v in data.items()}
        rows = [r[~tie] for r in rows]
        chosen_score, rejected_score = chosen_score[~tie], rejected_score[~tie]
    data["margin"] = chosen_score - rejected_score
    pairs = pd.DataFrame(data)
    groups = groups_of(valid["prompt_id"])
    if len(rows) == 2:  # the rule told where its pairs are: no id matching
        used = np.zeros(len(valid), dtype=bool)
        for r in rows:
            used[r] = True
        if kept is not None and not all(kept[r].all() for r in rows):
            raise RuntimeError(f"rule {rule} paired a candidate it also dropped")
        paired = groups.any(used)  # every pair's rows are of its own prompt
    else:
        used = isin(valid["candidate_id"], pd.concat([pairs["chosen_id"], pairs["rejected_id"]])).to_numpy()
        paired = isin(pd.Series(groups.ids.to_pandas()), pairs["prompt_id"]).to_numpy()
    # a prompt that got no pair at all (all its pairs tied, or the rule found none) must still be accounted for
    unpaired = ~paired if kept is None else ~paired & groups.any(kept)
    if unpaired.any():
        unpaired = groups.ids.filter(pa.array(unpaired))
        unpaired = unpaired.take(pc.sort_indices(unpaired))
        if drops:
            unpaired = unpaired.filter(pc.invert(pc.is_in(unpaired, value_set=_arrow(drops[0]["prompt_id"]))))
        if len(unpaired):
            drops.append(schema.drop_rows(unpaired, "select", "tie", "rule produced no pair with distinct rewards",
                                          rule=rule))
    left = groups.broadcast(paired) & ~used
    if kept is not None:
        left &= kept
    if left.any():
        mask = pa.array(left)
        # the ids first: with a helper thread on the texts, that is work done before the wait for them
        prompt_ids, candidate_ids = _arrow(valid["prompt_id"]).filter(mask), _arrow(valid["candidate_id"]).filter(mask)
        if texts is not None:
            at = np.flatnonzero(left)
            detail = texts.pick(at if pool_rows is None else pool_rows[at])
        else:
            detail = format_g6(valid["reward"].to_numpy()[left], "reward ")
        drops.append(schema.drop_rows(prompt_ids, "select", "not_selected", detail, rule=rule,
                                      candidate_ids=candidate_ids))
    return pairs, (pd.concat(drops, ignore_index=True) if drops else no_drops())


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
    return np.array([int(ids.stable_hash(tag, seed, *k), 16) / 16.0**16 for k in keys], dtype=np.float64)


def valid_pool(ctx, name: str) -> pd.DataFrame:
    """The valid pool the rule saw (SelectionContext.pool), for pair filters that need per-prompt statistics."""
    if ctx is None or getattr(ctx, "pool", None) is None:
        raise ValueError(f"{name} needs the valid pool (SelectionContext.pool, set by selection.select)")
    return ctx.pool
