"""The real transformers sampler reports each chunk of `batch_prompts` prompts to the live progress, with the
tokens that chunk generated (the embedded SmolLM2; the conftest fixture loads it once)."""

from __future__ import annotations

import pytest

from pipelines.core.progress import listening

pytestmark = pytest.mark.slow


def test_one_report_per_chunk_with_its_generated_tokens(transformers_sampler, small_sampler_cfg):
    sampler, step = transformers_sampler, small_sampler_cfg.batch_prompts  # 4 prompts per chunk
    conversations = [[{"role": "user", "content": f"What is {a} + {a + 1}?"}] for a in range(6)]
    seeds = list(range(6))
    reports = []
    with listening(lambda prompts, tokens: reports.append((prompts, tokens))):
        out = sampler.generate(conversations, small_sampler_cfg.k, seeds)
    assert [p for p, _ in reports] == [step, 6 - step]
    # the chunks are the prompts in order of their rendered length (less padding); each report is its chunk's tokens
    order = sorted(range(6), key=lambda i: len(sampler.render(conversations[i])))
    per_prompt = [sum(g.completion_tokens for g in gens) for gens in out]
    assert [t for _, t in reports] == [sum(per_prompt[i] for i in order[:step]),
                                       sum(per_prompt[i] for i in order[step:])]
    assert all(t > 0 for _, t in reports)
    # listening changes nothing: the same seeds give the same samples without a listener
    again = sampler.generate(conversations, small_sampler_cfg.k, seeds)
    assert [[g.text for g in gens] for gens in again] == [[g.text for g in gens] for gens in out]
