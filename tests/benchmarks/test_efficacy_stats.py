"""benchmarks/efficacy.py: the statistics and the random control's pairs (no model needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "efficacy.py"


@pytest.fixture(scope="module")
def eff():
    spec = importlib.util.spec_from_file_location("efficacy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_mcnemar_is_the_two_sided_binomial_test(eff):
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(0, 0), (1, 0), (5, 5), (61, 19), (3, 17), (40, 25), (0, 12)]:
        expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
        assert eff.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_exact_mcnemar_small_cases_by_hand(eff):
    # all discordant pairs one way: p = 2 * (1/2)^n
    assert eff.mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    # 1 vs 3: 2 * (C(4,0) + C(4,1)) / 2^4 = 10/16
    assert eff.mcnemar_exact(1, 3) == pytest.approx(10 / 16)
    assert eff.mcnemar_exact(2, 2) == 1.0 and eff.mcnemar_exact(0, 0) == 1.0


def test_wilson_interval(eff):
    assert eff.wilson(0, 10)[0] == 0.0
    lo, hi = eff.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)


def test_paired_counts_and_refuses_different_prompt_sets(eff):
    a = pd.Series([True, True, False, False, True], index=list("abcde"))
    b = pd.Series([False, True, True, False, False], index=list("edcba"))  # order does not matter, ids do
    out = eff.paired(a, b)
    assert (out["n"], out["a_only"], out["b_only"]) == (5, 3, 2)
    assert out["difference"] == pytest.approx(0.2) and out["p_mcnemar"] == 1.0
    with pytest.raises(ValueError, match="same prompts"):
        eff.paired(a, b.drop("e"))


def test_random_pairs_are_two_different_texts_and_seeded(eff):
    rows = [(p, j, t) for p, texts in {"p1": ["x", "x", "y", "z"], "p2": ["same"] * 4, "p3": ["a", "b"]}.items()
            for j, t in enumerate(texts)]
    candidates = pd.DataFrame({"candidate_id": [f"{p}-{j}" for p, j, _ in rows], "prompt_id": [p for p, _, _ in rows],
                               "sample_index": [j for _, j, _ in rows], "text": [t for _, _, t in rows]})
    pool = candidates[["prompt_id", "candidate_id", "sample_index"]].assign(reward=1.0)
    text = candidates.set_index("candidate_id")["text"]
    pairs = eff.random_pairs(pool, candidates, seed=0)
    assert sorted(pairs["prompt_id"]) == ["p1", "p3"]  # p2 has one distinct text: no pair
    assert (text.loc[pairs["chosen_id"]].to_numpy() != text.loc[pairs["rejected_id"]].to_numpy()).all()
    assert pairs.equals(eff.random_pairs(pool.sample(frac=1, random_state=1), candidates, seed=0))
    draws = {tuple(eff.random_pairs(pool, candidates, seed=s)["chosen_id"]) for s in range(8)}
    assert len(draws) > 1  # the seed changes the draw


def test_results_md_table_goes_between_the_markers_and_the_prose_stays(eff, tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# R\nbefore\n{eff.MARKERS[0]}\nold table\n{eff.MARKERS[1]}\nafter\n")
    eff.write_results_md("| new |", doc)
    eff.write_results_md("| newer |", doc)  # idempotent: one table, replaced
    assert doc.read_text() == f"# R\nbefore\n{eff.MARKERS[0]}\n| newer |\n{eff.MARKERS[1]}\nafter\n"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        eff.write_results_md("| t |", doc)


def test_pool_summary_counts_right_answers_per_prompt(eff, tmp_path):
    import json
    # three prompts x 8 samples: 0, 3 and 8 right -> one all wrong, one in band (3/8), one all right
    right_of = {"p0": 0, "p1": 3, "p2": 8}
    families = {"p0": "sum", "p1": "sum", "p2": "word_add"}
    candidates = pd.DataFrame([{"candidate_id": f"{p}-{j}", "prompt_id": p, "sample_index": j}
                               for p in right_of for j in range(8)])
    scores = pd.DataFrame([{"candidate_id": f"{p}-{j}", "prompt_id": p, "scorer": scorer,
                            "score": (1.0 if j < n else 0.0) if scorer == "math_verify" else 0.5}
                           for p, n in right_of.items() for j in range(8) for scorer in ("math_verify", "confidence")])
    prompts = pd.DataFrame({"prompt_id": list(right_of),
                            "meta": [json.dumps({"family": families[p]}) for p in right_of]})
    paths = eff.Paths(tmp_path / "results", tmp_path / "work")
    paths.pool.mkdir(parents=True)
    for name, df in (("prompts", prompts), ("candidates", candidates), ("scores", scores)):
        df.to_parquet(paths.pool / f"{name}.parquet")
    paths.pool_done.write_text("{}")
    out = eff.pool_summary({}, paths)
    assert out["prompts"] == 3 and out["sampled_accuracy"] == pytest.approx(11 / 24, abs=1e-4)
    assert out["in_band_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["mixed_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["all_wrong_share"] == out["all_right_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["right_of_k_histogram"] == {0: 1, 3: 1, 8: 1}
    assert out["by_family"]["sum"] == {"prompts": 2, "sampled_accuracy": pytest.approx(0.1875, abs=1e-3),
                                       "in_band_share": 0.5}
