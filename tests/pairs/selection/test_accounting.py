"""One hand-built scored run in which every selection-stage drop reason fires, through `stages.select_stage`
(scores -> rewards.combine -> rule -> pair filters -> TRL rows), checked row by row.

The model-based filters (CHES, implicit margin, dedup, diversity) have their own tests on the real models
(tests/pairs/selection/test_model_filters.py); `dual_margin` runs here on the external margin alone, which needs no
model.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.pairs import stages
from pipelines.pairs.config import SelectionConfig

WEIGHTS = {"math_verify": 0.5, "confidence": 1.0}   # reward = 0.5 * correct + confidence

# prompt -> [(math_verify, confidence, text)]; None = that scorer failed on the candidate
RUN = {
    "few":   [(None, 0.5, "x"), (1, 0.5, "y")],                       # f0 score_error -> 1 valid: too_few_valid
    "flat":  [(0, 0.4, "a"), (0, 0.4, "b")],                          # 0.4, 0.4: zero_variance
    "wrong": [(0, 0.2, "a"), (0, 0.6, "b")],                          # no correct answer: no_correct
    "right": [(1, 0.2, "a"), (1, 0.6, "b")],                          # all correct: no_incorrect
    # C = {tie0: 0.75}, I by reward = {tie1: 0.75, tie2: 0.9}: the pair (tie0, tie1) has equal rewards: tie
    "tie":   [(1, 0.25, "a"), (0, 0.75, "b"), (0, 0.9, "c")],
    "small": [(1, 0.1, "a"), (0, 0.55, "b")],                         # 0.6 vs 0.55: margin 0.05 < 0.1: below_margin
    "long":  [(1, 0.5, "L" * 300), (0, 0.5, "s" * 10)],               # 1.0 vs 0.5, 300/10 chars > 2: length_ratio
    # C = {good0 1.4, good1 1.0}, I = {good2 0.1, good3 0.3}, good4 confidence failed: pair (good0, good2),
    # good1/good3 not_selected, good4 score_error; margin 1.3
    "good":  [(1, 0.9, "aaaa"), (1, 0.5, "bbbb"), (0, 0.1, "cccc"), (0, 0.3, "dddd"), (0, None, "eeee")],
    "good2": [(1, 0.7, "aaaa"), (0, 0.7, "bbbb")],                    # 1.2 vs 0.7: margin 0.5, the lower of 2:
}                                                                     # dual_margin keeps 1 of 2: low_dual_margin

SELECTION = SelectionConfig(
    rule="verified", params={"correct_scorer": "math_verify", "max_pairs_per_prompt": 1},
    pair_filters=[{"name": "margin", "params": {"min_margin": 0.1}},
                  {"name": "length", "params": {"max_ratio": 2.0}},
                  {"name": "dual_margin", "params": {"sources": ["external"], "keep_fraction": 0.5}}])

EXPECTED_DROPS = {
    ("few", "few0", "select", "score_error"), ("few", None, "select", "too_few_valid"),
    ("flat", None, "select", "zero_variance"),
    ("wrong", None, "select", "no_correct"), ("right", None, "select", "no_incorrect"),
    ("tie", None, "select", "tie"),
    ("good", "good1", "select", "not_selected"), ("good", "good3", "select", "not_selected"),
    ("good", "good4", "select", "score_error"),
    ("small", None, "filter", "below_margin"), ("long", None, "filter", "length_ratio"),
    ("good2", None, "filter", "low_dual_margin"),
}


def build_run():
    prompts, candidates, scores = [], [], []
    for row, (p, responses) in enumerate(RUN.items(), start=1):
        prompts.append(dict(prompt_id=p, source="hand", row=row, messages=schema.user_messages(f"question {p}"),
                            reference="1", meta="{}"))
        for i, (mv, conf, text) in enumerate(responses):
            cid = f"{p}{i}"
            candidates.append(dict(candidate_id=cid, prompt_id=p, sample_index=i, text=text, finish_reason="stop",
                                   prompt_tokens=5, completion_tokens=len(text), logprob_sum=-1.0,
                                   sampler="hand", model="hand-model", seed=0))
            for scorer, value in (("math_verify", mv), ("confidence", conf)):
                scores.append(dict(candidate_id=cid, prompt_id=p, scorer=scorer,
                                   score=None if value is None else float(value), details=None,
                                   error="could not parse" if value is None else None))
    return (schema.frame(candidates, schema.CANDIDATES), schema.frame(scores, schema.SCORES),
            schema.frame(prompts, schema.PROMPTS))


def test_every_selection_reason_fires_with_the_right_prompt_and_candidate():
    candidates, scores, prompts = build_run()
    pairs, drops = stages.select_stage(candidates, scores, prompts, SELECTION, WEIGHTS)

    assert list(zip(pairs["prompt_id"], pairs["chosen_id"], pairs["rejected_id"])) == [("good", "good0", "good2")]
    assert pairs["margin"].iloc[0] == pytest.approx(1.3)
    got = {(r.prompt_id, None if pd.isna(r.candidate_id) else r.candidate_id, r.stage, r.reason)
           for r in drops.itertuples()}
    assert got == EXPECTED_DROPS
    assert len(drops) == len(EXPECTED_DROPS)                        # one row each, no duplicates
    assert {r for *_, r in EXPECTED_DROPS} == {"score_error", "too_few_valid", "zero_variance", "no_correct",
                                               "no_incorrect", "tie", "not_selected", "below_margin",
                                               "length_ratio", "low_dual_margin"}
    assert set(drops["rule"]) <= {"verified", "margin", "length", "dual_margin"}

    # every prompt is paired or has a prompt-level row; every candidate is in a pair, has its own row, or
    # belongs to an unpaired prompt whose prompt-level row covers it
    paired = set(pairs["prompt_id"])
    prompt_rows = set(drops.loc[drops["candidate_id"].isna(), "prompt_id"])
    assert paired | prompt_rows == set(prompts["prompt_id"]) and not paired & prompt_rows
    used = set(pairs["chosen_id"]) | set(pairs["rejected_id"])
    own_rows = set(drops["candidate_id"].dropna())
    for cid, pid in zip(candidates["candidate_id"], candidates["prompt_id"]):
        assert cid in used or cid in own_rows or pid in prompt_rows, cid

    # both tables conform to their schemas (what build writes to pairs.parquet / drops.parquet)
    schema.to_table(pairs, schema.PAIRS)
    schema.to_table(drops, schema.DROPS)
    assert pairs["prompt"].iloc[0] == schema.user_messages("question good")
    assert pairs["chosen"].iloc[0] == [{"role": "assistant", "content": "aaaa"}]
