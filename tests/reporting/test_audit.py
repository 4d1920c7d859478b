"""The pair-quality audit on hand-built pairs whose every number is known."""

from __future__ import annotations

import pandas as pd

from pipelines.reporting.audit import audit_rows, pair_audit


def _msg(text):
    return [{"role": "assistant", "content": text}]


def _fixture():
    # 4 pairs over 8 candidates: c0>c1, c2>c3, c4>c5, c6>c7
    candidates = pd.DataFrame({
        "candidate_id": [f"c{i}" for i in range(8)],
        "finish_reason": ["stop", "length", "length", "stop", "stop", "stop", "stop", "length"],
        "completion_tokens": [10, 20, 30, 10, 5, 5, 40, 20],
    })
    pairs = pd.DataFrame({
        "chosen_id": ["c0", "c2", "c4", "c6"], "rejected_id": ["c1", "c3", "c5", "c7"],
        "chosen": [_msg("a"), _msg("b"), _msg("same"), _msg("d")],
        "rejected": [_msg("x"), _msg("y"), _msg("same"), _msg("z")],
        "margin": [1.0, 0.5, 0.0, 2.0],
    })
    # math_verify: c0 right, c1 wrong; c2 wrong, c3 wrong; c4 right, c5 right; c6 right, c7 right (c7's row is an
    # error: a null score is not "right"); another scorer's rows are ignored
    scores = pd.DataFrame({
        "candidate_id": [f"c{i}" for i in range(8)] + ["c1"],
        "scorer": ["math_verify"] * 8 + ["confidence"],
        "score": [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, None, 1.0],
    })
    return pairs, candidates, scores


def test_every_number_of_the_audit():
    audit = pair_audit(*_fixture())
    assert audit["pairs"] == 4
    assert audit["verified"] == {"math_verify": {"chosen_right": 0.75, "rejected_right": 0.25, "both_wrong": 0.25,
                                                 "both_right": 0.25}}
    assert audit["truncated"] == {"chosen": 0.25, "rejected": 0.5}     # c2 of the chosen; c1 and c7 of the rejected
    assert audit["identical"] == 1
    # token ratios 10/20, 30/10, 5/5, 40/20 -> 0.5, 3, 1, 2: median 1.5; chosen strictly longer in 2 of 4
    assert audit["length"]["median_ratio"] == 1.5 and audit["length"]["chosen_longer"] == 0.5
    assert audit["length"]["median_chosen"] == 20.0 and audit["length"]["median_rejected"] == 15.0
    assert audit["length"]["unit"] == "tokens"
    assert audit["margin"]["q0"] == 0.0 and audit["margin"]["q100"] == 2.0 and audit["margin"]["q50"] == 0.75


def test_no_verifier_no_pairs_and_missing_token_counts():
    pairs, candidates, scores = _fixture()
    audit = pair_audit(pairs, candidates, scores[scores["scorer"] == "confidence"])
    assert audit["verified"] == {}  # no verifier ran: nothing claimed
    assert pair_audit(pairs.iloc[:0], candidates, scores) == {"pairs": 0}
    assert audit_rows({"pairs": 0}) == [("pairs", "0")]
    # a pair whose candidates have no token count (an external pair): lengths fall back to characters
    odd = pairs.iloc[:1].assign(chosen=[_msg("abcd")], rejected=[_msg("ab")])
    audit = pair_audit(odd, candidates.assign(completion_tokens=[None] * 8), scores)
    assert audit["length"]["median_ratio"] == 2.0 and "characters" in audit["length"]["unit"]


def test_rows_name_each_check():
    rows = dict(audit_rows(pair_audit(*_fixture())))
    assert rows["chosen verified right (math_verify)"] == "75.0%"
    assert rows["both wrong (math_verify)"] == "25.0%"
    assert rows["rejected cut at the token cap"] == "50.0%"
    assert rows["identical chosen and rejected"] == "1"
    assert rows["chosen/rejected length, median ratio"] == "1.50"
    assert rows["margin q10 / q50 / q90"] == "0.15 / 0.75 / 1.7"   # numpy linear quantiles of 0, 0.5, 1, 2
