"""select's integer-code paths against per-prompt loops.

The pools build_pairs makes hold each prompt's candidates in consecutive rows (Groups finds them by comparing
neighbours and uses ufunc.reduceat); any other order goes through a hash factorization and ufunc.at. Both are
checked against the per-prompt loop of benchmarks/selection.py (the loop the speed figures compare with) on
random pools with ties, NaN rewards, zero-variance and too-few prompts: the same pairs and the same drop rows,
detail text included. The drop-detail formatter is checked against Python's f"{v:.6g}".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from benchmarks.selection import loop
from pipelines.pairs.selection import common, select
from pipelines.pairs.selection.details import format_g6
from pipelines.pairs.selection.grouped import _sort_indices, groups_of


def grouped_pool(seed: int, n_prompts: int = 400, k: int | None = None) -> pd.DataFrame:
    """k rows per prompt (random 1-10 unless given) in consecutive rows, sample_index in row order (as
    sample_stage writes them); rewards on a coarse grid (ties, flat prompts) or continuous; unless k is given,
    some NaN (scorer errors) and prompts with 1 valid row."""
    rng = np.random.default_rng(seed)
    rows = []
    fixed = k
    for p in range(n_prompts):
        pid = f"{rng.integers(0, 2**62):016x}"
        k = fixed or int(rng.integers(1, 11))
        kind = rng.random()
        for i in range(k):
            r = float(rng.integers(0, 3)) / 4 if kind < 0.5 else (0.5 if kind < 0.6 else float(rng.random()))
            if not fixed and rng.random() < 0.1:
                r = np.nan
            rows.append({"prompt_id": pid, "candidate_id": f"{pid}-{i}", "sample_index": i, "reward": r,
                         "error": None})
    return pd.DataFrame(rows)


def drop_list(drops: pd.DataFrame) -> list[tuple]:
    """Drop rows as (prompt, candidate or None, reason, detail), in no particular order."""
    return sorted(((p, None if pd.isna(c) else c, r, d) for p, c, r, d in
                   zip(drops["prompt_id"], drops["candidate_id"], drops["reason"], drops["detail"])), key=repr)


def as_sets(pairs: pd.DataFrame, drops: pd.DataFrame):
    return set(zip(pairs["prompt_id"], pairs["chosen_id"], pairs["rejected_id"])), drop_list(drops)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("rule", ["max_min", "mu_2sigma"])
@pytest.mark.parametrize("helper_thread", [False, True])
def test_select_equals_the_benchmarks_per_prompt_loop(seed, rule, helper_thread, monkeypatch):
    # helper_thread: the not_selected texts come from RewardTexts (a thread over all pool rows, then the rows kept)
    monkeypatch.setattr(common.RewardTexts, "MIN_ROWS", 0 if helper_thread else 10**12)
    pool = grouped_pool(seed)
    assert groups_of(pool["prompt_id"]).starts is not None  # the consecutive-runs path
    pairs, drops = select(pool, rule)
    want_pairs, want_drops = loop(pool, rule, with_drops=True)
    got_pairs, got_drops = as_sets(pairs, drops)
    assert got_pairs == set(want_pairs)
    assert got_drops == drop_list(want_drops)
    assert {"zero_variance", "too_few_valid", "score_error", "not_selected"} <= set(drops["reason"])
    assert pairs["prompt_id"].tolist() == sorted(pairs["prompt_id"])


@pytest.mark.parametrize("rule", ["max_min", "mu_2sigma"])
def test_full_pools_of_k_rows_take_the_argmax_path_and_equal_the_loop(rule):
    pool = grouped_pool(11, k=6)  # ties (coarse rewards), no NaN: every prompt is 6 rows in sample_index order
    valid, _ = common.prepare(pool, rule)
    assert groups_of(valid["prompt_id"]).uniform_run(valid["sample_index"].to_numpy()) == 6
    pairs, drops = select(pool, rule)
    want_pairs, want_drops = loop(pool, rule, with_drops=True)
    assert as_sets(pairs, drops) == (set(want_pairs), drop_list(want_drops))


@pytest.mark.parametrize("rule,params", [("max_min", {}), ("mu_2sigma", {}), ("mu_2sigma", {"ddof": 1}),
                                         ("mu_2sigma", {"chosen_point": "mu+sigma", "rejected_point": "min"})])
def test_consecutive_and_shuffled_rows_select_the_same(rule, params):
    pool = grouped_pool(7)
    shuffled = pool.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert groups_of(shuffled["prompt_id"]).starts is None  # the hash-factorization path
    a, b = select(pool, rule, params), select(shuffled, rule, params)
    assert as_sets(*a) == as_sets(*b)
    pd.testing.assert_frame_equal(a[0], b[0])  # pairs in prompt_id order either way


def test_groups_find_runs_only_when_no_prompt_comes_back():
    ids = pd.Series(["b", "b", "a", "c", "c", "c"])
    g = groups_of(ids)
    assert "codes" not in g.__dict__  # runs: the per-row codes are built only when asked for
    mask = np.array([False, True, False, False, False, True])
    assert g.any(mask).tolist() == [True, False, True] and "codes" not in g.__dict__
    assert g.starts.tolist() == [0, 2, 3] and g.codes.tolist() == [0, 0, 1, 2, 2, 2]
    assert not g.codes.flags.writeable  # shared through the cache
    assert g.ids.to_pylist() == ["b", "a", "c"] and g.order.tolist() == [1, 0, 2]
    back = groups_of(pd.Series(["b", "a", "b", "c"]))  # "b" comes back: not consecutive
    assert back.starts is None and back.codes.tolist() == [0, 1, 0, 2] and back.ids.to_pylist() == ["b", "a", "c"]
    assert back.any(np.array([False, False, True, False])).tolist() == [True, False, False]
    values = np.array([3.0, 1.0, 5.0, 2.0, 9.0, 4.0])
    assert g.extreme(values).tolist() == [1.0, 5.0, 2.0] and g.extreme(values, lowest=False).tolist() == [3.0, 5.0, 9.0]
    sub = g.subset(np.array([True, False, False, True, False, True]))  # "a" loses its only row
    assert sub.ids.to_pylist() == ["b", "c"] and sub.codes.tolist() == [0, 1, 1] and sub.starts.tolist() == [0, 1]
    assert sub.order.tolist() == [0, 1]
    with pytest.raises(ValueError, match="1 rows have no prompt_id"):
        groups_of(pd.Series(["a", None]))


def test_first_is_the_first_row_of_a_stable_sort():
    rng = np.random.default_rng(3)
    for consecutive in (True, False):
        df = pd.DataFrame({"prompt_id": np.repeat([f"p{i:03d}" for i in range(200)], 6),
                           "a": rng.integers(0, 3, 1200).astype(float), "b": rng.integers(-2, 2, 1200)})
        df.loc[rng.random(1200) < 0.2, "a"] = np.nan  # NaN sorts last either way
        if not consecutive:
            df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
        alive = rng.random(len(df)) < 0.8
        g = groups_of(df["prompt_id"])
        assert (g.starts is not None) == consecutive
        for keys in ((["a"], [True]), (["a"], [False]), (["a", "b"], [False, True]), (["b", "a"], [True, False])):
            first = g.first([(df[c].to_numpy(), asc) for c, asc in zip(*keys)], alive=alive)
            want = (df[alive].reset_index().sort_values(["prompt_id", *keys[0]], ascending=[True, *keys[1]],
                                                        kind="stable").drop_duplicates("prompt_id"))
            got = {g.ids[i].as_py(): int(r) for i, r in enumerate(first) if r >= 0}
            assert got == dict(zip(want["prompt_id"], want["index"]))


def test_sort_indices_is_arrows_string_sort():
    rng = np.random.default_rng(0)
    hashes = list({f"{x:016x}" for x in rng.integers(0, 2**62, 50000)})
    tied = [f"{i % 7:08x}{x:08x}" for i, x in enumerate(rng.integers(0, 2**31, 3000))]  # first 8 bytes tie often
    for ids in (hashes, list(dict.fromkeys(tied)), ["b", "a", "ab", "é", "e"], [f"p{i}" for i in range(500)], ["x"]):
        arr = pa.array(ids, pa.large_string())
        assert _sort_indices(arr).tolist() == pc.sort_indices(arr).to_numpy().tolist()


@pytest.mark.parametrize("n", [10, 100, 20000])
def test_format_g6_with_a_prefix_is_pythons(n):
    rng = np.random.default_rng(n)
    pools = [rng.random(n),                                            # rewards in (0, 1): the fast path
             rng.random(n) * np.where(rng.random(n) < 0.5, -1, 1),    # signs
             rng.normal(size=n) * 10.0 ** rng.integers(-6, 8, n),     # every exponent, >= 1, exponent form
             np.rint(rng.random(n) * 10.0 ** (digits := rng.integers(1, 8, n))) / 10.0 ** digits,  # trailing 0s
             np.where(rng.random(n) < 0.3, 0.0, rng.integers(0, 3, n) / 2.0)]  # 0, 0.5, 1 (coarse rewards)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, 0.9999995, 99999.95, 999999.5, 0.000099999995])
    for values in [*pools, np.concatenate([pools[0], special])]:
        assert format_g6(values, "reward ").to_pylist() == [f"reward {v:.6g}" for v in values.tolist()]


def test_the_helper_thread_works_in_a_forked_child(monkeypatch):
    """A child forked after select ran has the parent's executor object but not its thread: it must make its own
    (else its first select would wait forever)."""
    import os
    import signal
    monkeypatch.setattr(common.RewardTexts, "MIN_ROWS", 0)
    pool = grouped_pool(5, k=4)
    want = select(pool, "max_min")
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when its select gives the parent's drops, 1 otherwise, 2 if stuck
        signal.alarm(60)
        signal.signal(signal.SIGALRM, lambda *_: os._exit(2))
        got = select(pool, "max_min")
        os._exit(0 if drop_list(got[1]) == drop_list(want[1]) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("helper_busy", [False, True])
def test_reward_texts_pieces_from_both_threads_equal_format_g6(helper_busy, monkeypatch):
    """pick formats the pieces the helper has not started (every piece when the helper is busy elsewhere), from
    the back; whoever formats a piece, the texts are format_g6's for exactly the rows asked for, in row order."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(common.RewardTexts, "PIECES", 5)
    release = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(common.RewardTexts, "_executor", executor)
    monkeypatch.setattr(common.RewardTexts, "_pid", os.getpid())
    if helper_busy:  # the helper's one worker is occupied until pick has formatted every piece
        executor.submit(release.wait, 60)
    pool = pd.DataFrame({"reward": np.random.default_rng(3).normal(size=1003)})
    texts = common.RewardTexts(pool)
    rows = np.sort(np.random.default_rng(4).choice(len(pool), 600, replace=False))
    if helper_busy:
        texts._format(False)  # pick's half of the work: with the helper busy it claims every piece
        assert texts._next > texts._last and all(isinstance(x, pa.Array) for x in texts._texts)
        release.set()
    got = texts.pick(rows)
    assert got.to_pylist() == [f"reward {v:.6g}" for v in pool["reward"].to_numpy()[rows].tolist()]
    executor.shutdown()


def test_reward_texts_errors_reach_the_caller(monkeypatch):
    monkeypatch.setattr(common, "format_g6", lambda *a: (_ for _ in ()).throw(ValueError("bad piece")))
    texts = common.RewardTexts(pd.DataFrame({"reward": np.arange(100.0)}))
    with pytest.raises(ValueError, match="bad piece"):
        texts.pick(np.arange(10))
