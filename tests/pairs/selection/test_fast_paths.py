"""The integer-code fast paths of selection against simple per-prompt references written here.

Random pools with ties (rewards from a coarse grid), scorer errors (NaN rewards), prompts with 1 valid response,
flat prompts, and shuffled rows: pairs AND drop rows (reason and detail text) must equal what a plain Python
loop over each prompt gives.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.pairs.selection import common, select
from pipelines.pairs.selection.details import format_g6
from pipelines.pairs.selection.grouped import ROW_COLUMNS
from pipelines.pairs.selection.max_min import max_min

EPS = 1e-12


def random_pool(seed: int, n_prompts: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        pid = f"{rng.integers(0, 2**40):010x}"  # random ids: sorted order differs from creation order
        k = int(rng.integers(1, 9))
        coarse = rng.random() < 0.7  # coarse grid: many ties inside a prompt, some flat prompts
        for i in rng.permutation(k):
            r = float(rng.integers(0, 5)) / 4 if coarse else float(rng.normal())
            if rng.random() < 0.15:
                r = None
            rows.append({"prompt_id": pid, "candidate_id": f"{pid}-{i}", "sample_index": int(i),
                         "reward": np.nan if r is None else r, "error": "boom" if r is None else None})
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in no particular order


def reference(pool: pd.DataFrame, rule: str, ddof: int = 0, rejected_point: str = "mu-2sigma"):
    """Per-prompt loop: (pairs {prompt: (chosen, rejected)}, drops {(prompt, candidate or None): (reason, detail)}).
    Sums run over each prompt's rows in pool order, as np.bincount adds them (bitwise equal mu and sigma)."""
    pairs, drops = {}, {}
    groups: dict[str, list] = {}
    for row in pool.itertuples():
        groups.setdefault(row.prompt_id, []).append(row)
    for p, rows in groups.items():
        valid = [r for r in rows if not math.isnan(r.reward)]
        for r in rows:
            if math.isnan(r.reward):
                drops[(p, r.candidate_id)] = ("score_error", r.error)
        if len(valid) < 2:
            drops[(p, None)] = ("too_few_valid", f"{len(valid)} valid of {len(rows)} responses")
            continue
        rewards = [r.reward for r in valid]
        if max(rewards) - min(rewards) <= EPS:
            drops[(p, None)] = ("zero_variance", f"all {len(valid)} rewards = {max(rewards):.6g}")
            continue
        if rule == "max_min":
            chosen = min(valid, key=lambda r: (-r.reward, r.sample_index))
            rejected = min(valid, key=lambda r: (r.reward, r.sample_index))
        else:
            mu = sum(rewards) / len(rewards)
            sigma = math.sqrt(sum((x - mu) ** 2 for x in rewards) / (len(rewards) - ddof)) \
                if len(rewards) > ddof else 0.0
            point = {"mu-2sigma": mu - 2 * sigma, "mu-sigma": mu - sigma, "mu": mu, "min": min(rewards)}[
                rejected_point]
            chosen = min(valid, key=lambda r: (abs(r.reward - max(rewards)), -r.reward, r.sample_index))
            rejected = min((r for r in valid if r is not chosen),
                           key=lambda r: (abs(r.reward - point), r.reward, r.sample_index))
        if abs(chosen.reward - rejected.reward) <= EPS:
            drops[(p, None)] = ("tie", f"chosen and rejected both {chosen.reward:.6g}")
            continue
        pairs[p] = (chosen.candidate_id, rejected.candidate_id)
        for r in valid:
            if r is not chosen and r is not rejected:
                drops[(p, r.candidate_id)] = ("not_selected", f"reward {r.reward:.6g}")
    return pairs, drops


def as_dicts(pairs: pd.DataFrame, drops: pd.DataFrame):
    got_pairs = {r.prompt_id: (r.chosen_id, r.rejected_id) for r in pairs.itertuples()}
    got_drops = {(r.prompt_id, None if pd.isna(r.candidate_id) else r.candidate_id): (r.reason, r.detail)
                 for r in drops.itertuples()}
    assert len(got_drops) == len(drops), "one drop row per prompt/candidate"
    return got_pairs, got_drops


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule,params", [("max_min", {}), ("mu_2sigma", {}), ("mu_2sigma", {"ddof": 1}),
                                         ("mu_2sigma", {"rejected_point": "mu"})])
def test_rules_equal_per_prompt_reference(seed, rule, params):
    pool = random_pool(seed)
    pairs, drops = select(pool, rule, params)
    want_pairs, want_drops = reference(pool, rule, **params)
    got_pairs, got_drops = as_dicts(pairs, drops)
    assert got_pairs == want_pairs
    assert got_drops == want_drops
    assert pairs["prompt_id"].tolist() == sorted(want_pairs)  # pairs come in prompt_id order
    assert list(pairs.columns) == [*common.PAIR_COLUMNS, "margin"]
    assert np.allclose(pairs["margin"], pairs["chosen_score"] - pairs["rejected_score"])


def test_fast_first_per_prompt_equals_pandas_sort():
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"prompt_id": [f"q{i}" for i in rng.integers(0, 400, n)],
                       "sample_index": rng.permutation(n).astype(np.int32),
                       "a": rng.integers(0, 3, n).astype(float), "b": rng.integers(-2, 2, n)})
    df.loc[rng.random(n) < 0.2, "a"] = np.nan  # NaN sorts last in either direction
    for by, asc in ((["a"], [True]), (["a"], [False]), (["a", "b"], [False, True]), (["b", "a"], [True, False])):
        fast = common.first_per_prompt(df, by, asc)
        slow = (df.sort_values(["prompt_id", *by, "sample_index"], ascending=[True, *asc, True], kind="stable")
                .drop_duplicates("prompt_id", keep="first"))
        pd.testing.assert_frame_equal(fast, slow)


def test_stats_equal_pandas_groupby():
    pool = random_pool(3)
    for ddof in (0, 1):
        got = common.stats(pool, ddof)
        g = pool.groupby("prompt_id")["reward"]
        want = pd.DataFrame({"mu": g.transform("mean"), "sigma": g.transform("std", ddof=ddof).fillna(0.0),
                             "rmin": g.transform("min"), "rmax": g.transform("max")}, index=pool.index)
        pd.testing.assert_frame_equal(got, want, rtol=1e-12, atol=1e-12)


def test_finish_with_and_without_row_positions_agree():
    valid, _ = common.prepare(random_pool(4), "max_min")
    with_rows = max_min(valid)
    assert set(ROW_COLUMNS) <= set(with_rows.columns)
    a = common.finish(valid, valid, with_rows, "max_min")
    b = common.finish(valid, valid, with_rows.drop(columns=list(ROW_COLUMNS)), "max_min")
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_format_g6_is_python_g6():
    rng = np.random.default_rng(1)
    values = np.concatenate([
        rng.random(20000), 10 ** rng.uniform(-9, 9, 20000) * rng.choice([-1, 1], 20000),
        np.round(rng.random(5000), 7),                       # 7th digit 5: rounding half-way cases
        rng.integers(-10**7, 10**7, 5000).astype(float),
        [0.0, -0.0, np.nan, np.inf, -np.inf, 9.999995, 99999.95, 999999.5, 999999.4, 0.000099999995, 1e-4, 1e-5,
         1e6, 1e5, 0.1234565, 2.5, 0.5, 1.0000005, 123456.5, 5e-324, 1.7e308]])
    assert format_g6(values).to_pylist() == [f"{v:.6g}" for v in values.tolist()]
