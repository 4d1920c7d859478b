"""The sampler options the step search needs (continue_final, stop, max_new_tokens), on the real embedded model.

Kept small (two conversations, two samples, at most 16 new tokens): the machine is shared.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # the real model

QUESTION = [{"role": "system", "content": "Solve the problem. Finish with the final answer as a number in \\boxed{}."},
            {"role": "user", "content": "Priya has 24 coins and gets 17 more. How many coins does Priya have now?"}]
PARTIAL = QUESTION + [{"role": "assistant", "content": "Priya starts with 24 coins.\n\n"}]


def test_render_continues_the_partial_answer_verbatim(transformers_sampler):
    s = transformers_sampler
    assert s.render(QUESTION) == s.tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    text = s.render(PARTIAL, continue_final=True)
    assert text.endswith("assistant\nPriya starts with 24 coins.\n\n")   # no end-of-turn, delimiter kept
    assert text.startswith(s.render(QUESTION))
    # continue_final only touches conversations that end with an assistant message
    assert s.render(QUESTION, continue_final=True) == s.render(QUESTION)


def test_stop_strings_cut_the_text_and_keep_seeded_logprobs(transformers_sampler):
    s = transformers_sampler
    seeds = [1, 2]
    stopped = s.generate([QUESTION, PARTIAL], 2, seeds, continue_final=True, stop=["."], max_new_tokens=16)
    rows = [g for gens in stopped for g in gens]
    assert len(stopped) == 2 and all(len(g) == 2 for g in stopped)
    for g in rows:
        assert "." not in g.text and g.completion_tokens <= 16
        assert (g.stop_reason == ".") == (g.finish_reason == "stop" and g.stop_reason is not None)
    hits = [(i, j) for i in range(2) for j in range(2) if stopped[i][j].stop_reason == "."]
    assert hits, "no sample reached a '.' in 16 tokens"
    i, j = hits[0]
    g = stopped[i][j]
    # the same seeds without stop strings sample the same tokens: the stopped text is a prefix of that text, and
    # the log-prob sum over the same number of tokens is the same (not the running sum over the padded tail)
    plain = s.generate([QUESTION, PARTIAL], 2, seeds, continue_final=True, max_new_tokens=g.completion_tokens)
    full = plain[i][j]
    assert full.stop_reason is None and full.completion_tokens == g.completion_tokens
    assert full.text.startswith(g.text + ".")
    assert g.logprob_sum == pytest.approx(full.logprob_sum, rel=1e-6, abs=1e-6)
    assert g.logprob_sum < 0
