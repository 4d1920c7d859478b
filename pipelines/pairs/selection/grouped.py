"""Per-prompt work on integer codes instead of strings.

`groups_of(pool["prompt_id"])` numbers the prompts once (`Groups.codes`, one integer per row); rules, prepare and
finish then work on (codes, numbers) with numpy and touch strings only to gather the ids of their output.
The pools build_pairs makes hold each prompt's k candidates in consecutive rows: then the groups are found by
comparing neighbouring ids (one pass, no hash table) and per-prompt minima are `ufunc.reduceat` over the runs;
any other row order goes through a hash factorization and `ufunc.at`, with the same results.
"""

from __future__ import annotations

import weakref
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# optional pair columns: positions of chosen/rejected in the pool the rule was given (see pairs_from_rows)
ROW_COLUMNS = ("_chosen_pos", "_rejected_pos")


class Groups:
    """The prompts of a pool: codes[i] = the group of row i, groups numbered in order of first appearance;
    ids = each group's prompt id (arrow); starts = each group's first row when every group's rows are
    consecutive, else None."""

    def __init__(self, codes: np.ndarray | None, ids: pa.Array, starts: np.ndarray | None,
                 order: np.ndarray | None = None, rows: int | None = None):
        """codes None: groups that are runs (starts given) of `rows` rows in all; codes are built on first use."""
        self.ids, self.starts = ids, starts
        self.n, self.rows = len(ids), len(codes) if codes is not None else rows
        if codes is not None:
            self.__dict__["codes"] = codes
        if order is not None:
            self.__dict__["order"] = order

    @cached_property
    def codes(self) -> np.ndarray:
        """codes[i] = the group of row i. For runs built only when asked: max_min and finish never need all of
        them (8 MB at 1M rows)."""
        codes = np.repeat(np.arange(self.n), self.count())
        codes.flags.writeable = False  # shared through the cache
        return codes

    def any(self, mask: np.ndarray) -> np.ndarray:
        """Per group: whether any of its rows is True in mask (for runs without building codes)."""
        if self.starts is not None and self.n:
            return np.logical_or.reduceat(mask, self.starts)
        out = np.zeros(self.n, dtype=bool)
        out[self.codes[mask]] = True
        return out

    @cached_property
    def order(self) -> np.ndarray:
        """The groups in prompt_id order (the order of a sort_values/groupby result)."""
        return _sort_indices(self.ids)

    def extreme(self, values: np.ndarray, lowest: bool = True) -> np.ndarray:
        """Per-group min (or max) of values; groups without rows get +inf (-inf). NaN must be removed first."""
        ufunc = np.minimum if lowest else np.maximum
        if self.starts is not None and self.n:
            return ufunc.reduceat(values, self.starts)
        out = np.full(self.n, np.inf if lowest else -np.inf)
        ufunc.at(out, self.codes, values)
        return out

    def broadcast(self, per_group: np.ndarray) -> np.ndarray:
        """per_group[codes]: each row gets its group's value."""
        if self.starts is not None:
            return np.repeat(per_group, self.count())
        return per_group[self.codes]

    def count(self, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            if "sizes" not in self.__dict__:
                self.__dict__["sizes"] = np.diff(self.starts, append=self.rows) if self.starts is not None \
                    else np.bincount(self.codes, minlength=self.n)
            return self.__dict__["sizes"]
        return np.bincount(self.codes, weights=mask, minlength=self.n).astype(np.int64)

    def stats(self, values: np.ndarray, ddof: int = 0, extremes: bool = True) -> dict[str, np.ndarray]:
        """Per-group size (non-NaN values), mean, std (ddof; 0 where undefined), and (extremes) min, max; NaN
        skipped as pandas does. Sums by np.bincount, which adds in row order (mean, then squared deviations)."""
        values = np.asarray(values, dtype=np.float64)
        nan = np.isnan(values) if has_nan(values) else None
        if nan is None:
            codes, v, n = self.codes, values, self.count()
        else:
            codes, v = self.codes[~nan], values[~nan]
            n = np.bincount(codes, minlength=self.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = np.bincount(codes, weights=v, minlength=self.n) / n
            deviation = v - (self.broadcast(mu) if nan is None else mu[codes])
            var = np.bincount(codes, weights=deviation ** 2, minlength=self.n) / (n - ddof)
        sigma = np.where(n - ddof > 0, np.sqrt(np.where(var >= 0, var, 0.0)), 0.0)
        if not extremes:
            return {"size": n, "mu": mu, "sigma": sigma}
        if nan is not None:
            rmin = self.extreme(np.where(nan, np.inf, values))
            rmax = self.extreme(np.where(nan, -np.inf, values), lowest=False)
        else:
            rmin, rmax = self.extreme(values), self.extreme(values, lowest=False)
        rmin[n == 0] = rmax[n == 0] = np.nan
        return {"size": n, "mu": mu, "sigma": sigma, "rmin": rmin, "rmax": rmax}

    def first(self, keys: list[tuple[np.ndarray, bool]], alive: np.ndarray | None = None) -> np.ndarray:
        """Position of each group's first row in the order a stable sort by keys [(values, ascending), ...] gives
        (NaN last, as pandas sorts), or -1 for a group with no row. alive: a mask of the rows to consider.

        No sort: each key keeps, per group, the rows equal to the group's best value, and the lowest remaining
        position wins, which is exactly the first row of a stable sort. The first key looks at every row (a
        reduceat over the runs); the later ones only at the rows still tied, and none once no group has a tie."""
        rows = None  # None: every row (that is alive)
        for values, ascending in keys:
            if rows is not None and _one_per_group(self.codes[rows], self.n):
                break
            v = np.asarray(values) if rows is None else np.asarray(values)[rows]
            if v.dtype.kind not in "biuf":
                raise TypeError(f"first needs numeric keys, got {v.dtype}")
            if v.dtype.kind == "f" and has_nan(v):
                # NaN sorts last whatever the direction: first keep the non-NaN rows of each group
                rows, alive = self._keep_best(rows, alive, np.isnan(v).view(np.int8), True), None
                v = np.asarray(values)[rows]
                v = np.where(np.isnan(v), 0.0, v)
            rows, alive = self._keep_best(rows, alive, v, ascending), None
        if rows is None:  # no keys
            rows = np.arange(self.rows) if alive is None else np.flatnonzero(alive)
        first = np.full(self.n, self.rows, dtype=np.intp)
        np.minimum.at(first, self.codes[rows], rows)
        return np.where(first == self.rows, -1, first)

    def extreme_rows(self, values: np.ndarray, lowest: bool, sample: np.ndarray) -> np.ndarray:
        """first([(values, lowest), (sample, True)]): each group's row of the lowest (highest) value, ties to the
        lower sample_index. When every group is k consecutive rows in sample_index order (a full pool as
        sample_stage writes it) that is numpy's argmin/argmax of a (groups, k) view: its first hit is the lowest
        sample_index."""
        k = self.uniform_run(sample)
        if k and values.dtype.kind == "f" and not has_nan(values):
            view = values.reshape(-1, k)
            return (view.argmin(axis=1) if lowest else view.argmax(axis=1)) + self.starts
        return self.first([(values, lowest), (sample, True)])

    def uniform_run(self, sample: np.ndarray) -> int | None:
        """k when every group is k consecutive rows whose sample_index rises, else None (remembered per array)."""
        key = ("uniform_run", id(sample))
        if self.__dict__.get("_run_key") != key:
            k = None
            if self.starts is not None and self.n and self.rows % self.n == 0:
                k = self.rows // self.n
                sizes = self.count()
                if not (sizes == k).all() or k < 1 or not (np.diff(sample.reshape(-1, k), axis=1) > 0).all():
                    k = None
            self.__dict__["_run_key"], self.__dict__["_run_k"] = key, k
        return self.__dict__["_run_k"]

    def _keep_best(self, rows, alive, v, lowest: bool) -> np.ndarray:
        """The rows (None: all, less those not alive) whose v equals their group's minimum (maximum) of v."""
        if rows is None:
            if alive is not None:
                worst = np.inf if lowest else -np.inf
                v = np.where(alive, v, worst if v.dtype.kind == "f" else (np.iinfo(v.dtype).max if lowest
                                                                          else np.iinfo(v.dtype).min))
            keep = v == self.broadcast(self.extreme(v, lowest))
            if alive is not None:
                keep &= alive
            return np.flatnonzero(keep)
        c = self.codes[rows]
        v = np.asarray(v, dtype=np.float64)
        best = np.full(self.n, np.inf if lowest else -np.inf)
        (np.minimum if lowest else np.maximum).at(best, c, v)
        return rows[v == best[c]]

    def subset(self, keep: np.ndarray) -> Groups:
        """The groups of the rows where keep is True (groups left without rows are gone, the order kept)."""
        codes = self.codes[keep]
        present = np.zeros(self.n, dtype=bool)
        present[codes] = True
        renumber = np.cumsum(present) - 1
        codes = renumber[codes]
        starts = None
        if self.starts is not None:
            starts = np.flatnonzero(np.diff(codes, prepend=-1))
        order = None
        if "order" in self.__dict__:
            order = renumber[self.order[present[self.order]]]
        return Groups(codes, self.ids.filter(pa.array(present)), starts, order)


def has_nan(values: np.ndarray) -> bool:
    """np.isnan(values).any() without a mask: the sum is NaN if any value is (or if +inf meets -inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isnan(np.sum(values))) and bool(np.isnan(values).any())


def _one_per_group(codes: np.ndarray, n_groups: int) -> bool:
    """Whether no group has two of these rows (then later sort keys change nothing)."""
    return len(codes) <= n_groups and (len(codes) < 2 or np.bincount(codes, minlength=n_groups).max() <= 1)


def groups_of(prompt_ids: pd.Series) -> Groups:
    """The Groups of a prompt_id column. A missing prompt id is a ValueError.

    select() asks for the same column in prepare, in the rule and in finish; arrow arrays are immutable, so the
    result is kept for as long as the arrow array it came from is alive (weak reference, checked by identity),
    and prepare hands the valid pool's Groups over with `remember`."""
    chunked = _chunked(prompt_ids)
    if chunked is not None:
        hit = _CACHE.get(id(chunked))
        if hit is not None and hit[0]() is chunked:
            return hit[1]
    arr = _arrow(prompt_ids).cast(pa.large_string())
    if arr.null_count:
        raise ValueError(f"{arr.null_count} rows have no prompt_id")
    n = len(arr)
    if n == 0:
        groups = Groups(np.zeros(0, dtype=np.intp), arr, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp))
    else:
        starts = np.flatnonzero(np.concatenate([[True], _changes(arr)]))
        groups = None
        if len(starts) <= n // 2:  # runs of 2+ rows: consecutive unless a prompt id comes back later
            heads = arr.take(pa.array(starts))
            order, repeated = _sort_indices(heads, distinct=False)
            if not repeated:
                groups = Groups(None, heads, starts, order, rows=n)
        if groups is None:
            codes, uniques = pd.factorize(prompt_ids)
            codes = codes.astype(np.intp, copy=False)
            groups = Groups(codes, _arrow(uniques).cast(pa.large_string()),
                            starts if len(uniques) == len(starts) else None)
    if chunked is not None:
        remember(prompt_ids, groups)
    return groups


def remember(prompt_ids: pd.Series, groups: Groups) -> None:
    """Let groups_of(prompt_ids) answer `groups` (prepare: the valid pool's groups, derived from the pool's)."""
    chunked = _chunked(prompt_ids)
    if chunked is None:
        return
    if "codes" in groups.__dict__:
        groups.codes.flags.writeable = False  # shared through the cache
    key = id(chunked)
    _CACHE[key] = (weakref.ref(chunked, lambda _, key=key: _CACHE.pop(key, None)), groups)


_CACHE: dict[int, tuple] = {}


def _chunked(values) -> pa.ChunkedArray | None:
    arr = getattr(values, "array", None)
    arr = getattr(arr, "_pa_array", None)
    return arr if isinstance(arr, pa.ChunkedArray) else None


def _arrow(values) -> pa.Array:
    """A column (Series, Index, extension array) as one arrow array, without a copy when it is arrow already."""
    chunked = _chunked(values)
    if chunked is None and hasattr(values, "_pa_array"):
        chunked = values._pa_array
    if chunked is not None:
        return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
    return pa.array(np.asarray(values, dtype=object), from_pandas=True)


def _fixed_width(ids: pa.Array) -> np.ndarray | None:
    """The ids' bytes as an (n, width) uint8 view when every id has the same width (content hashes: 16 hex
    digits) of at most 16 bytes and none is null; else None."""
    if not len(ids) or ids.null_count:
        return None
    ids = ids.cast(pa.large_string())
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64, count=len(ids) + 1, offset=ids.offset * 8)
    width = int(offsets[1] - offsets[0])
    if not 0 < width <= 16 or offsets[-1] - offsets[0] != width * len(ids) or (np.diff(offsets) != width).any():
        return None
    return np.frombuffer(ids.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, width)


def _changes(arr: pa.Array) -> np.ndarray:
    """change[i]: arr[i + 1] != arr[i]. Ids of 8 or 16 bytes compare as machine words (4x faster than arrow)."""
    data = _fixed_width(arr)
    if data is not None and data.shape[1] % 8 == 0:
        words = data.view(np.uint64)  # raw bits: equality does not care about byte order
        change = words[1:, 0] != words[:-1, 0]
        for j in range(1, words.shape[1]):
            change |= words[1:, j] != words[:-1, j]
        return change
    return pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1)).to_numpy(zero_copy_only=False)


def _sort_indices(ids: pa.Array, distinct: bool = True) -> tuple[np.ndarray, bool] | np.ndarray:
    """np.argsort of strings (distinct: only the order; else (order, whether two ids are equal)). Ids of one
    width up to 16 bytes compare as their big-endian 8-byte words: a numpy argsort of the first word, with the
    few ties broken by the second (10x faster than arrow's string sort)."""
    data = _fixed_width(ids)
    if data is None or len(ids) < 2:
        order = pc.sort_indices(ids).to_numpy().astype(np.intp, copy=False)
        if distinct:
            return order
        ordered = ids.take(pa.array(order))
        return order, len(ids) > 1 and pc.any(pc.equal(ordered.slice(1), ordered.slice(0, len(ids) - 1))).as_py()
    padded = np.zeros((len(ids), 16), dtype=np.uint8)
    padded[:, :data.shape[1]] = data
    words = padded.view(">u8").astype(np.uint64)
    order = np.argsort(words[:, 0])
    first = words[order, 0]
    tied = np.flatnonzero(first[1:] == first[:-1])
    if len(tied):  # the rows of equal first words (whole runs, in place), sorted by both words
        at = np.union1d(tied, tied + 1)
        run = order[at]
        order[at] = run[np.lexsort((words[run, 1], words[run, 0]))]
    if distinct:
        return order
    second = words[order, 1]
    return order, bool(len(tied) and ((first[tied + 1] == first[tied]) & (second[tied + 1] == second[tied])).any())


def pairs_from_rows(pool: pd.DataFrame, groups: Groups, chosen: np.ndarray, rejected: np.ndarray) -> pd.DataFrame:
    """Pairs frame from per-group row positions (-1 = no row: the group gets no pair), in prompt_id order.

    It also carries the positions (ROW_COLUMNS) so that `finish` finds the used candidates without matching
    1M candidate id strings; `finish` removes them."""
    g = groups.order
    c, r = chosen[g], rejected[g]
    both = (c >= 0) & (r >= 0)
    if not both.all():
        g, c, r = g[both], c[both], r[both]
    ids, rewards = _arrow(pool["candidate_id"]), pool["reward"].to_numpy(dtype=np.float64)
    return pa.table({"prompt_id": groups.ids.take(pa.array(g)), "chosen_id": ids.take(pa.array(c)),
                     "rejected_id": ids.take(pa.array(r)), "chosen_score": rewards[c], "rejected_score": rewards[r],
                     ROW_COLUMNS[0]: c, ROW_COLUMNS[1]: r}).to_pandas()
