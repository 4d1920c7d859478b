"""The build_pairs configuration: prompts -> k samples -> scores -> selection -> pairs.

Shared sections (prompts, sampler, executor) come from pipelines/core/config.py; the scorers and the selection
(rule, pool filters, pair filters) are this build's own. Names are checked against the registries of `scorers/`
and `pipelines/pairs/selection/` when the config is validated, before any model loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.core.config import (
    BudgetConfig,
    CacheConfig,
    ExecutorConfig,
    FileConfig,
    PromptsConfig,
    SamplerConfig,
    StrictModel,
    default_batch_size,
)
from pipelines.core.registry import check_known


class ScorerConfig(StrictModel):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from scorers import SCORERS
        return check_known(SCORERS, name, "scorer")


class FilterConfig(StrictModel):
    """A pool filter or pair filter, by name, and its parameters."""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SelectionConfig(StrictModel):
    rule: str = "mu_2sigma"
    params: dict[str, Any] = Field(default_factory=dict)
    normalize: Literal["none", "zscore"] = Field(
        "none", description="per-prompt z-normalisation of each scorer before the weighted sum")
    pool_filters: list[FilterConfig] = Field(
        default_factory=list, description="run on the scored pool before the rule (e.g. response dedup)")
    pair_filters: list[FilterConfig] = Field(
        default_factory=list, description="run on the rule's pairs, in order (margins, CHES, length, curricula)")
    dstc_concat: bool = Field(
        False, description="DSTC test-code concatenation: append the most trusted passed test to the chosen program "
                           "and the most doubtful failed test to the rejected one (needs the dstc scorer)")

    @field_validator("rule")
    @classmethod
    def _known(cls, rule: str) -> str:
        from pipelines.pairs.selection import RULES
        return check_known(RULES, rule, "selection rule")

    @model_validator(mode="after")
    def _known_filters(self):
        from pipelines.pairs.selection import PAIR_FILTERS, POOL_FILTERS, one_pair_per_prompt
        for f in self.pool_filters:
            check_known(POOL_FILTERS, f.name, "pool filter")
        for f in self.pair_filters:
            check_known(PAIR_FILTERS, f.name, "pair filter")
            # a filter that would silently do nothing is refused: per-prompt tiers of one pair are all tier 0
            if f.name == "curry_tiers" and f.params.get("scope", "prompt") == "prompt" and \
                    one_pair_per_prompt(self.rule, self.params):
                raise ValueError(f"pair filter curry_tiers with scope: prompt ranks the pairs of each prompt, but "
                                 f"rule {self.rule} makes one pair per prompt, so every pair would be tier 0; use "
                                 f"params: {{scope: global}} (tiers over all pairs of the run) or a rule with "
                                 f"several pairs per prompt (all_ranked, best_of_set)")
        return self


class BuildConfig(FileConfig):
    """Everything a build_pairs run needs. Defaults: the embedded CPU job (SmolLM2, shipped math prompts)."""
    run_id: str | None = Field(None, description="run directory name (default: time + config hash)")
    output_dir: str = "runs"
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    scorers: list[ScorerConfig] = Field(default_factory=lambda: [
        ScorerConfig(name="math_verify", weight=1.0),
        ScorerConfig(name="confidence", weight=0.1),
    ])
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    batch_size: int | None = Field(
        None, ge=1, description="prompts per checkpointed batch (the unit of resume); default: about 3 minutes of "
                                "engine time, 8,192 sampled tokens (k x max_new_tokens each) per batch for "
                                "transformers (16 at k=4, 128 tokens), 2^20 for vllm, 2^20 per replica for ray_data")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig,
                                     description="where batch tasks run: local, or ray (a Ray cluster)")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="the shard cache after the run")
    budget: BudgetConfig = Field(default_factory=BudgetConfig,
                                 description="max_total_tokens stops sampling at a batch boundary; "
                                             "tokens_per_second for the dry run's estimate")

    @field_validator("scorers")
    @classmethod
    def _some_scorer(cls, scorers: list[ScorerConfig]) -> list[ScorerConfig]:
        if not scorers:
            raise ValueError("at least one scorer is needed")
        return scorers

    @model_validator(mode="after")
    def _default_batch_size(self):
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.sampler)
        return self

    @model_validator(mode="after")
    def _concat_needs_dstc(self):
        if self.selection.dstc_concat and not any(s.name == "dstc" for s in self.scorers):
            raise ValueError("selection.dstc_concat needs the dstc scorer (its details hold the tests)")
        return self
