"""The vllm sampler's options for the step search (continue_final, stop, max_new_tokens) on a stand-in LLM.

The stand-in records what it is given: token-id prompts that keep the partial answer, stop strings and max_tokens
in the per-prompt SamplingParams, seeds, and the stop_reason mapping of the reply. (The real engine in the step
search: tests/step_pairs/test_build_vllm.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

pytestmark = pytest.mark.slow  # imports vllm; the real tokenizer

QUESTION = [{"role": "user", "content": "What is 40 + 1?"}]
PARTIAL = QUESTION + [{"role": "assistant", "content": "First, 40.\n\n"}]


class RecordingLLM:
    def __init__(self):
        self.calls = []

    def _reply(self, n_prompts, params):
        out = []
        for p in params:
            outputs = [SimpleNamespace(text="step", finish_reason="stop", token_ids=[1, 2], cumulative_logprob=-1.5,
                                       stop_reason="\n\n"),
                       SimpleNamespace(text="done", finish_reason="stop", token_ids=[3], cumulative_logprob=-0.5,
                                       stop_reason=None)][:p.n]
            out.append(SimpleNamespace(prompt_token_ids=[0] * 7, outputs=outputs))
        return out

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.calls.append(("generate", prompts, sampling_params))
        return self._reply(len(prompts), sampling_params)

    def chat(self, conversations, sampling_params, use_tqdm=False):
        self.calls.append(("chat", conversations, sampling_params))
        return self._reply(len(conversations), sampling_params)


@pytest.fixture()
def vllm_sampler(smollm_dir):
    from transformers import AutoTokenizer

    from pipelines.core.config import SamplerConfig
    from samplers.vllm_backend import VLLMSampler
    sampler = object.__new__(VLLMSampler)   # no engine: only the request/reply plumbing is under test
    sampler.cfg = SamplerConfig(name="vllm", k=2, max_new_tokens=50)
    sampler.model_name = "m"
    sampler.tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    sampler.llm = RecordingLLM()
    return sampler


def test_continue_final_sends_token_ids_with_the_partial_answer(vllm_sampler):
    s = vllm_sampler
    gens = s.generate([QUESTION, PARTIAL], 2, [5, 6], continue_final=True, stop=["\n\n"], max_new_tokens=9)
    kind, prompts, params = s.llm.calls[-1]
    assert kind == "generate" and len(prompts) == 2
    text = s.tokenizer.decode(prompts[1]["prompt_token_ids"])
    assert text.endswith("assistant\nFirst, 40.\n\n") and text == s.render(PARTIAL, True)
    assert s.tokenizer.decode(prompts[0]["prompt_token_ids"]) == s.render(QUESTION)
    assert [(p.n, p.seed, p.max_tokens, p.stop) for p in params] == [(2, 5, 9, ["\n\n"]), (2, 6, 9, ["\n\n"])]
    assert [(g.text, g.stop_reason, g.logprob_sum) for g in gens[0]] == [("step", "\n\n", -1.5), ("done", None, -0.5)]


def test_plain_calls_are_unchanged(vllm_sampler):
    s = vllm_sampler
    s.generate([QUESTION], 2, [3])
    kind, conversations, params = s.llm.calls[-1]
    assert kind == "chat" and conversations == [QUESTION]
    assert (params[0].max_tokens, params[0].seed, params[0].stop) == (50, 3, [])
