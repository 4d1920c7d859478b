"""The evaluate configuration: which model, which held-out prompts, greedy or sampled, which verifier.

Defaults: greedy accuracy of the embedded SmolLM2 on the eval split of the shipped math prompts.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pipelines.core.config import EMBEDDED_MODEL, FileConfig, PromptsConfig, SamplerConfig, section_factory

# Every prompt of the held-out split. The system prompt is PromptsConfig's default, the one build_pairs samples
# with: a model trained on default pairs is evaluated in the form it was trained on.
EVAL_PROMPTS = {"split": "eval", "limit": None}
GREEDY = {"temperature": 0.0, "max_new_tokens": 128}


class EvalConfig(FileConfig):
    """Defaults: greedy accuracy of the embedded SmolLM2 on the eval split of the shipped math prompts."""
    # a partial section (`--prompts.limit 40`) keeps the held-out split and greedy decoding (FileConfig)
    SECTION_DEFAULTS: ClassVar = {"prompts": EVAL_PROMPTS, "sampler": GREEDY}
    model: str = Field(EMBEDDED_MODEL, description="model to evaluate (overrides sampler.model)")
    output: str = Field("runs/eval/eval.json", description="result JSON")
    prompts: PromptsConfig = Field(default_factory=section_factory(PromptsConfig, EVAL_PROMPTS))
    sampler: SamplerConfig = Field(default_factory=section_factory(SamplerConfig, GREEDY),
                                   description="temperature 0: greedy; sampler.k is not used (see samples)")
    samples: int = Field(1, ge=1, description="responses per prompt (pass@1 = mean correctness over them)")
    scorer: Literal["auto", "math_verify", "execution"] = Field(
        "auto", description="auto: execution for prompts.format humaneval, else math_verify")

    @model_validator(mode="after")
    def _greedy_once(self):
        if self.sampler.temperature == 0 and self.samples > 1:
            raise ValueError("greedy decoding (sampler.temperature 0) gives one response: set samples: 1")
        return self

    def scorer_name(self) -> str:
        if self.scorer != "auto":
            return self.scorer
        return "execution" if self.prompts.format == "humaneval" else "math_verify"
