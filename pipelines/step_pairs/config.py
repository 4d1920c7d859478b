"""The build_step_pairs configuration: step-level pairs from MCTS trees and first-error correction.

Same conventions as pipelines/pairs/config.py:BuildConfig (the prompts, sampler and executor sections are the
core's): one pydantic model, validated before any model loads; the Prefect flow's parameter, the `--config FILE`
of the CLI and the target of `--section.field value` overrides. Every budget below is per prompt unless it says
otherwise.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pipelines.core.config import (
    CALCULATION_PROMPT,
    BudgetConfig,
    ExecutorConfig,
    FileConfig,
    PromptsConfig,
    SamplerConfig,
    StrictModel,
    section_factory,
)

# Not build_pairs' one-sentence system prompt (PromptsConfig's default): MCTS and first-error correction work on the
# steps of an answer (split at mcts.delimiters), and "one short sentence" asks for an answer with no steps to branch
# on or to correct. The calculation prompt asks for the steps.
STEP_PROMPTS = {"system_prompt": CALCULATION_PROMPT}


class MCTSConfig(StrictModel):
    iterations: int = Field(4, ge=1, description="search rounds per prompt (one expansion per round)")
    branching: int = Field(2, ge=2, description="candidate next steps sampled per expansion (b)")
    max_depth: int = Field(4, ge=1, description="steps per path; deeper nodes are leaves valued by rollouts")
    step_tokens: int = Field(48, ge=1, description="max new tokens of one step")
    delimiters: list[str] = Field(["\n\n"], min_length=1,
                                  description='step delimiters (stop strings), e.g. ["\\n\\n"] or ["\\nStep "]')
    rollouts: int = Field(1, ge=0, description="Monte Carlo completions per new non-final step (0: none)")
    rollout_tokens: int = Field(96, ge=1, description="max new tokens of one rollout")
    max_rollouts: int = Field(32, ge=0, description="rollout budget per prompt (search)")
    self_eval: bool = Field(False, description="add the policy's own 'is this step correct?' confidence")
    self_eval_samples: int = Field(2, ge=1, description="sampled Yes/No answers per self-evaluation")
    self_eval_weight: float = Field(1.0, ge=0.0)
    w_exp: float = Field(1.0, ge=0.0, description="PUCT exploration weight (MCTS-DPO default 1.0)")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount in the backup (MCTS-DPO default 1.0)")
    length_penalty: float = Field(1.25, description="prior p = exp(logprob / len**length_penalty) (MCTS-DPO 1.25)")
    rejected: Literal["lowest", "runner_up"] = Field(
        "lowest", description="rejected sibling: lowest Q, or the runner-up (MCTS-DPO's default choice)")
    min_q_margin: float = Field(0.0, ge=0.0, description="a step pair needs Q(chosen) - Q(rejected) > this")


class CorrectionConfig(StrictModel):
    samples: int = Field(4, ge=1, description="full solutions sampled per prompt to look for wrong ones")
    solution_tokens: int = Field(128, ge=1, description="max new tokens of a sampled solution")
    max_wrong: int = Field(1, ge=1, description="wrong solutions corrected per prompt")
    max_steps: int = Field(6, ge=1, description="prefixes checked per wrong solution (steps 0..max_steps-1)")
    rollouts: int = Field(2, ge=1, description="Monte Carlo completions per prefix")
    rollout_tokens: int = Field(96, ge=1)


Mode = Literal["step", "trajectory", "correction"]


class StepPairsConfig(FileConfig):
    """Everything a build_step_pairs run needs. Defaults: the embedded CPU model on the shipped math prompts, asked
    for a calculation (STEP_PROMPTS)."""
    SECTION_DEFAULTS: ClassVar = {"prompts": STEP_PROMPTS}
    run_id: str | None = Field(None, description="run directory name (default: time + config hash)")
    output_dir: str = "runs"
    prompts: PromptsConfig = Field(default_factory=section_factory(PromptsConfig, STEP_PROMPTS))
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    modes: list[Mode] = Field(["step", "trajectory", "correction"], min_length=1,
                              description="step: sibling steps on the best path; trajectory: best vs worst "
                                          "complete solution of the tree; correction: first-error (Step-DPO)")
    mcts: MCTSConfig = Field(default_factory=MCTSConfig)
    correction: CorrectionConfig = Field(default_factory=CorrectionConfig)
    batch_size: int = Field(8, ge=1, description="prompts per checkpointed batch (trees searched together)")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig,
                                     description="where batch tasks run: local, or ray (a Ray cluster)")
    budget: BudgetConfig = Field(default_factory=BudgetConfig,
                                 description="max_total_tokens stops the search at a batch boundary; "
                                             "tokens_per_second for the dry run's estimate")

    def token_bound(self) -> dict[str, int]:
        """Most tokens one prompt can sample, by engine-call kind (every step/rollout/solution at its cap).

        The cost formula of docs/step-pairs.md; the manifest sets it beside the counted tokens (steps that end at a
        delimiter or at the end of the answer sample fewer)."""
        mc, fe = self.mcts, self.correction
        bound = {}
        if {"step", "trajectory"} & set(self.modes):
            new_steps = mc.iterations * mc.branching          # one expansion of b steps per round, at most
            rolled = min(new_steps * mc.rollouts, (mc.max_rollouts // mc.rollouts) * mc.rollouts if mc.rollouts else 0)
            bound.update(expand=new_steps * mc.step_tokens, rollout=rolled * mc.rollout_tokens,
                         self_eval=new_steps * mc.self_eval_samples * 3 if mc.self_eval else 0)
        if "correction" in self.modes:
            bound.update(correction_sample=fe.samples * fe.solution_tokens,
                         correction_rollout=fe.max_wrong * fe.max_steps * fe.rollouts * fe.rollout_tokens)
        return bound

    @model_validator(mode="after")
    def _distinct_modes(self):
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes repeat: {self.modes}")
        return self
