"""rewards.combine: weighted scorer columns, errors carried to the reward, per-prompt z-normalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.pairs import rewards


def test_combine_weights_errors_and_zscore():
    cands = pd.DataFrame({"prompt_id": ["p", "p", "p"], "candidate_id": ["c0", "c1", "c2"], "sample_index": [0, 1, 2]})
    scores = pd.DataFrame({
        "candidate_id": ["c0", "c1", "c2"] * 2, "prompt_id": ["p"] * 6,
        "scorer": ["a"] * 3 + ["b"] * 3,
        "score": [1.0, 0.0, 1.0, 0.5, 0.25, None], "details": [None] * 6,
        "error": [None] * 5 + ["timeout"]})
    out = rewards.combine(cands, scores, {"a": 1.0, "b": 0.1})
    assert out["reward"].tolist()[:2] == pytest.approx([1.05, 0.025])
    assert np.isnan(out["reward"][2]) and out["error"][2] == "b: timeout"
    z = rewards.combine(cands, scores, {"a": 1.0}, normalize="zscore")
    # a = [1, 0, 1]: mean 2/3, pop std 0.4714 -> z = [0.7071, -1.4142, 0.7071]
    assert z["reward"].tolist() == pytest.approx([0.70711, -1.41421, 0.70711], abs=1e-4)
    with pytest.raises(ValueError, match="no scores from scorer"):
        rewards.combine(cands, scores, {"c": 1.0})
