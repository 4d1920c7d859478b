"""Samplers: k responses per prompt from a policy model.

One protocol, implementations chosen by `sampler.name` in the config. Backends import their engine lazily,
so `import samplers` is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str          # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    logprob_sum: float | None   # sum of log p(token) under the policy at temperature 1; None if unknown
    stop_reason: str | None = None  # the stop string that ended the text (not included in it); None: EOS/length


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
        """n samples for each conversation; seeds[i] makes conversation i reproducible.

        Optional (step-level search, pipelines/mcts.py):
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
}


def _import(spec: str):
    import importlib
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=2)
def _cached(name: str, config_json: str) -> Sampler:
    from pipelines.config import SamplerConfig
    cfg = SamplerConfig.model_validate_json(config_json)
    return _import(SAMPLERS[name])(cfg)


def get_sampler(cfg) -> Sampler:
    """The sampler for a SamplerConfig; loaded once per process (engines are expensive to start)."""
    if cfg.name not in SAMPLERS:
        raise ValueError(f"unknown sampler {cfg.name!r}; known: {sorted(SAMPLERS)}")
    return _cached(cfg.name, cfg.model_dump_json())
