"""Pool filter drop_truncated: responses cut at the token cap never enter a pair, and say why."""

from __future__ import annotations

import pandas as pd

from pipelines.pairs.selection import SelectionContext, select


def test_truncated_responses_leave_the_pool_with_their_reason():
    candidates = pd.DataFrame({"candidate_id": ["a0", "a1", "a2", "b0", "b1"],
                               "finish_reason": ["length", "stop", "stop", "stop", "length"],
                               "completion_tokens": [128, 40, 50, 30, 128]})
    pool = pd.DataFrame({"prompt_id": ["a", "a", "a", "b", "b"], "candidate_id": candidates["candidate_id"],
                         "sample_index": [0, 1, 2, 0, 1], "reward": [1.0, 0.5, 0.0, 1.0, 0.0], "error": None})
    ctx = SelectionContext(candidates=candidates, prompts=None)
    pairs, drops = select(pool, "max_min", ctx=ctx, pool_filters=[("drop_truncated", {})])
    # prompt a: the best response a0 was cut, so a1 (0.5) is chosen over a2; prompt b is left with one response
    assert list(zip(pairs["chosen_id"], pairs["rejected_id"])) == [("a1", "a2")]
    cut = drops[drops["reason"] == "truncated"]
    assert sorted(cut["candidate_id"]) == ["a0", "b1"] and set(cut["stage"]) == {"filter"}
    assert cut.set_index("candidate_id").loc["a0", "detail"] == "finish_reason length after 128 tokens"
    assert drops.loc[drops["reason"] == "too_few_valid", "prompt_id"].tolist() == ["b"]
    # without the filter the truncated best answer is chosen
    plain, _ = select(pool, "max_min", ctx=ctx)
    assert plain.set_index("prompt_id").loc["a", "chosen_id"] == "a0"
