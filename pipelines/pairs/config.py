"""The build_pairs configuration: prompts -> k samples -> scores -> selection -> pairs.

Shared sections (prompts, sampler, executor) come from pipelines/core/config.py; the scorers and the selection
(rule, pool filters, pair filters) are this build's own. Names are checked against the registries of `scorers/`
and `pipelines/pairs/selection/` when the config is validated, before any model loads.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

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
    section_factory,
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


# The embedded default is the configuration the efficacy experiment measured best (benchmarks/RESULTS.md, "Data
# efficacy"; SmolLM2-135M, 643 held-out math prompts, greedy accuracy): DPO on `verified` pairs (a correct answer over
# a wrong one, 2 per prompt) took the model from 0.317 to 0.580, where `mu_2sigma`'s pairs (the earlier default; 31%
# of its pairs order two wrong answers by confidence) reached 0.498 and random pairs 0.381 (verified vs mu_2sigma:
# +0.082 [0.046, 0.119], 100 prompts gained / 47 lost, exact McNemar p = 1.5e-5; training seed 0).
DEFAULT_RULE = "verified"
DEFAULT_RULE_PARAMS = {"correct_scorer": "math_verify", "threshold": 1.0, "max_pairs_per_prompt": 2, "pick": "reward"}
# ... sampled as the experiment did (with the system prompt of PromptsConfig's default): k=8 gives a prompt with a
# 15-70% sampled accuracy a right and a wrong answer most of the time (data/README.md); answers are ~33 tokens,
# so 96 new tokens cut few of them
DEFAULT_SAMPLING = {"k": 8, "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 96}


class FilterConfig(StrictModel):
    """A pool filter or pair filter, by name, and its parameters."""
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SelectionConfig(StrictModel):
    rule: str = Field(DEFAULT_RULE, description="a selection rule (docs/selection.md); default: verified, correct "
                                                "over incorrect, the rule the efficacy experiment measured best")
    params: dict[str, Any] = Field(
        default_factory=dict,  # _default_rule_params fills the default rule's
        description=f"the rule's parameters; for rule {DEFAULT_RULE} the measured ones ({DEFAULT_RULE_PARAMS}) "
                    f"fill in those not given, for any other rule none")
    normalize: Literal["none", "zscore"] = Field(
        "none", description="per-prompt z-normalisation of each scorer before the weighted sum")
    pool_filters: list[FilterConfig] = Field(
        default_factory=list, description="run on the scored pool before the rule (e.g. response dedup)")
    pair_filters: list[FilterConfig] = Field(
        default_factory=list, description="run on the rule's pairs, in order (margins, CHES, length, curricula)")
    dstc_concat: bool = Field(
        False, description="DSTC test-code concatenation: append the most trusted passed test to the chosen program "
                           "and the most doubtful failed test to the rejected one (needs the dstc scorer)")

    @model_validator(mode="before")
    @classmethod
    def _default_rule_params(cls, data):
        # keyed on the rule, not laid over the section: `--selection.rule max_min` must not inherit verified's
        # params, and `--selection.params '{pick: random}'` (or `rule: verified` alone) keeps the other measured ones
        if isinstance(data, dict) and data.get("rule", DEFAULT_RULE) == DEFAULT_RULE:
            data = {**data, "params": {**DEFAULT_RULE_PARAMS, **(data.get("params") or {})}}
        return data

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
    """Everything a build_pairs run needs. Defaults: the embedded CPU job (SmolLM2, shipped math prompts), sampled,
    scored and selected as the efficacy experiment did (DEFAULT_SAMPLING, DEFAULT_RULE above)."""
    SECTION_DEFAULTS: ClassVar = {"sampler": DEFAULT_SAMPLING}
    run_id: str | None = Field(None, description="run directory name (default: time + config hash)")
    output_dir: str = "runs"
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    sampler: SamplerConfig = Field(default_factory=section_factory(SamplerConfig, DEFAULT_SAMPLING),
                                   description=f"default: the embedded model, {DEFAULT_SAMPLING}")
    scorers: list[ScorerConfig] = Field(default_factory=lambda: [
        ScorerConfig(name="math_verify", weight=1.0),
        ScorerConfig(name="confidence", weight=0.1),
    ])
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    batch_size: int | None = Field(
        None, ge=1, description="prompts per checkpointed batch (the unit of resume); default: about 3 minutes of "
                                "engine time, 8,192 sampled tokens (k x max_new_tokens each) per batch for "
                                "transformers (10 at k=8, 96 tokens), 2^20 for vllm, 2^20 per replica for ray_data")
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
    def _verifier_is_scored(self):
        # the rule would fail on the first batch's pool, after the model loaded and sampled: say it now
        if self.selection.rule == "verified":
            name = self.selection.params.get("correct_scorer", "math_verify")
            scorers = [s.name for s in self.scorers]
            if name not in scorers:
                raise ValueError(f"selection rule verified: correct_scorer {name!r} is not among the scorers "
                                 f"{scorers}; add it (weight 0 keeps it out of the reward) or set "
                                 f"selection.params.correct_scorer")
        return self

    @model_validator(mode="after")
    def _confidence_has_logprobs(self):
        # every confidence score would be an error row, and the rule would drop every prompt as score_error
        if not self.sampler.logprobs and any(s.name == "confidence" for s in self.scorers):
            raise ValueError("scorer confidence needs the sampled tokens' log-probs: set sampler.logprobs: true "
                             "or remove the confidence scorer")
        return self

    @model_validator(mode="after")
    def _concat_needs_dstc(self):
        if self.selection.dstc_concat and not any(s.name == "dstc" for s in self.scorers):
            raise ValueError("selection.dstc_concat needs the dstc scorer (its details hold the tests)")
        return self
