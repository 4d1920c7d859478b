"""Reward-model scorer mechanics.

No reward model ships in a PyPI package, so these tests build a small REAL LlamaForSequenceClassification
(tests.helpers.build_classifier): the first 4 layers of the embedded SmolLM2-135M-Instruct with a freshly
initialised (seeded) score head, saved with SmolLM2's tokenizer into a temp dir. Its scores mean nothing; the
tests check the plumbing (formatting, batching, padding, halving on out-of-memory, several heads), which is what
differs between a correct and a wrong reward-model runner.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from scorers import get_scorer
from scorers.reward_model import RewardModelScorer, encode, prompt_text
from tests.helpers import REWARD_ITEMS, build_classifier, scored_frames

pytestmark = pytest.mark.slow  # a classifier built from the real model


@pytest.fixture(scope="module")
def classifier_dir(smollm_dir, tmp_path_factory):
    return build_classifier(smollm_dir, tmp_path_factory.mktemp("rm1"))


def test_chat_template_format_ends_with_the_response(classifier_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    enc = encode(tok, schema.user_messages("Hi?"), "Hello there")
    text = tok.decode(enc["input_ids"])
    assert text.count("<|im_start|>assistant\nHello there<|im_end|>") == 1
    assert text.index("Hi?") < text.index("Hello there")
    # the template already starts with its own special token; none is added twice
    assert enc["input_ids"][0] != enc["input_ids"][1]


def test_plain_format_without_chat_template(classifier_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    tok.chat_template = None
    enc = encode(tok, schema.user_messages("Hi?", system="Be brief."), "Hello there")
    assert tok.decode(enc["input_ids"]) == "system: Be brief.\n\nuser: Hi?Hello there"
    assert prompt_text([{"role": "user", "content": "only"}]) == "only"


def test_batch_scores_equal_one_at_a_time(classifier_dir):
    candidates, prompts = scored_frames(REWARD_ITEMS)
    batched = RewardModelScorer(classifier_dir, batch_size=8).score(candidates, prompts)
    single = RewardModelScorer(classifier_dir, batch_size=1).score(candidates, prompts)
    assert batched["error"].isna().all()
    assert list(batched["candidate_id"]) == list(candidates["candidate_id"])  # row order = candidate order
    np.testing.assert_allclose(batched["score"], single["score"], rtol=1e-4, atol=1e-4)
    assert batched["score"].nunique() == len(candidates)  # different texts, different rewards
    details = [json.loads(d) for d in batched["details"]]
    assert all(d["tokens"] > 5 and len(d["head"]) == 1 for d in details)


def test_sequence_ending_with_pad_token_is_pooled_at_its_last_token(classifier_dir):
    """SmolLM2 pads with eos (<|im_end|>); a sequence ending with it must still pool at its own last token."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from scorers.reward_backends import TransformersRewardEngine
    engine = TransformersRewardEngine(classifier_dir)
    eos = engine.pad_id
    ends_with_pad = {"input_ids": [1, 504, 3156, eos]}
    other = {"input_ids": [1, 504, 3156, 314, 1345, 2000]}
    out = engine.run([ends_with_pad, other], batch_size=2)
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        logits = model.model(torch.tensor([ends_with_pad["input_ids"]])).last_hidden_state
        expected = model.score(logits)[0, -1, 0].item()
    assert out[0][0] == pytest.approx(expected, abs=1e-4)


def test_out_of_memory_halves_the_batch(classifier_dir, monkeypatch):
    import torch
    candidates, prompts = scored_frames(REWARD_ITEMS)
    reference = RewardModelScorer(classifier_dir, batch_size=1).score(candidates, prompts)
    scorer = RewardModelScorer(classifier_dir, batch_size=8)
    engine, _ = scorer._load()
    real_forward, sizes = engine.forward, []

    def forward(batch):  # pretend anything above 2 sequences does not fit
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(batch)
    monkeypatch.setattr(engine, "forward", forward)
    out = scorer.score(candidates, prompts)
    assert sizes[:3] == [8, 4, 2] and max(sizes[2:]) == 2
    assert engine.batch_size_used == 2
    np.testing.assert_allclose(out["score"], reference["score"], rtol=1e-4, atol=1e-4)


def test_out_of_memory_at_batch_size_one_is_an_error_row_and_other_errors_raise(classifier_dir, monkeypatch):
    candidates, prompts = scored_frames(REWARD_ITEMS)
    scorer = RewardModelScorer(classifier_dir, batch_size=4)
    engine, _ = scorer._load()
    real_forward = engine.forward
    tokens = [json.loads(d)["tokens"] for d in scorer.score(candidates, prompts)["details"]]
    longest = int(np.argmax(tokens))
    assert sorted(tokens)[-2] < tokens[longest]

    def forward(batch):  # the longest sequence never fits
        if max(len(e["input_ids"]) for e in batch) >= tokens[longest]:
            raise RuntimeError("CUDA error: out of memory")
        return real_forward(batch)
    monkeypatch.setattr(engine, "forward", forward)
    out = scorer.score(candidates, prompts)
    assert out["error"].notna().sum() == 1
    assert "out of memory" in out["error"][longest] and pd.isna(out["score"][longest])
    assert out["score"].notna().sum() == len(candidates) - 1

    monkeypatch.setattr(engine, "forward", lambda batch: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scorer.score(candidates, prompts)


def test_too_long_is_an_error_row_not_truncated(classifier_dir):
    candidates, prompts = scored_frames(REWARD_ITEMS)
    scorer = RewardModelScorer(classifier_dir)
    tokens = [json.loads(d)["tokens"] for d in scorer.score(candidates, prompts)["details"]]
    limit = int(np.median(tokens))
    scorer.max_length = limit
    out = scorer.score(candidates, prompts)
    for n, score, error in zip(tokens, out["score"], out["error"]):
        assert (n > limit) == isinstance(error, str)
        assert (n > limit) == pd.isna(score)
    assert 0 < sum(n > limit for n in tokens) < len(tokens)


def test_multi_objective_heads_weighted(smollm_dir, tmp_path):
    path = build_classifier(smollm_dir, tmp_path / "rm3", num_labels=3, layers=2)
    candidates, prompts = scored_frames(REWARD_ITEMS)
    with pytest.raises(ValueError, match="objective_weights"):
        RewardModelScorer(path).score(candidates, prompts)
    weights = [0.5, -1.0, 2.0]
    out = get_scorer("reward_model", {"model": path, "objective_weights": weights}).score(candidates, prompts)
    for score, details in zip(out["score"], out["details"]):
        head = json.loads(details)["head"]
        assert len(head) == 3
        assert score == pytest.approx(0.5 * head[0] - head[1] + 2 * head[2], abs=1e-5)

