"""The evaluate configuration: which model, which held-out prompts, greedy or sampled, which verifier.

Defaults: greedy accuracy of the embedded SmolLM2 on the eval split of the shipped math prompts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import EMBEDDED_MODEL, FileConfig, PromptsConfig, SamplerConfig


def _eval_prompts() -> PromptsConfig:
    return PromptsConfig(split="eval", limit=None)


def _greedy_sampler() -> SamplerConfig:
    return SamplerConfig(temperature=0.0, max_new_tokens=128)


class EvalConfig(FileConfig):
    """Defaults: greedy accuracy of the embedded SmolLM2 on the eval split of the shipped math prompts."""
    model: str = Field(EMBEDDED_MODEL, description="model to evaluate (overrides sampler.model)")
    output: str = Field("runs/eval/eval.json", description="result JSON")
    prompts: PromptsConfig = Field(default_factory=_eval_prompts)
    sampler: SamplerConfig = Field(default_factory=_greedy_sampler,
                                   description="temperature 0: greedy; sampler.k is not used (see samples)")
    samples: int = Field(1, ge=1, description="responses per prompt (pass@1 = mean correctness over them)")
    scorer: Literal["auto", "math_verify", "execution"] = Field(
        "auto", description="auto: execution for prompts.format humaneval, else math_verify")

    @model_validator(mode="before")
    @classmethod
    def _eval_defaults(cls, data):
        # a partial section (`--prompts.limit 40`) is validated as a fresh PromptsConfig: keep the eval defaults
        # (the held-out split, greedy decoding) unless the section sets them itself
        if isinstance(data, dict):
            if isinstance(data.get("prompts"), dict):
                data["prompts"] = {"split": "eval", "limit": None, **data["prompts"]}
            if isinstance(data.get("sampler"), dict):
                data["sampler"] = {"temperature": 0.0, "max_new_tokens": 128, **data["sampler"]}
        return data

    @model_validator(mode="after")
    def _greedy_once(self):
        if self.sampler.temperature == 0 and self.samples > 1:
            raise ValueError("greedy decoding (sampler.temperature 0) gives one response: set samples: 1")
        return self

    def scorer_name(self) -> str:
        if self.scorer != "auto":
            return self.scorer
        return "execution" if self.prompts.format == "humaneval" else "math_verify"
