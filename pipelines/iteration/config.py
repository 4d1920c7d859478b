"""The iterate configuration: rounds of build -> train -> evaluate, each section the flow's own config.

Defaults: 2 rounds of the embedded CPU build -> LoRA DPO -> held-out math accuracy. The build's prompts default to
the train split and the evaluation's to the eval split; a config where they could overlap is refused.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from pipelines.core.config import EMBEDDED_MODEL, FileConfig, section_factory
from pipelines.evaluation.config import EvalConfig
from pipelines.pairs.config import BuildConfig
from pipelines.training.config import TrainConfig

# Each section is its flow's config with that flow's defaults (build_pairs' measured sampling and rule, train_dpo's
# measured loss and learning rate, evaluate's greedy held-out accuracy, the same system prompt in build and eval);
# only the build's prompts move to the train split, which a partial build section keeps (FileConfig).
TRAIN_BUILD = {"prompts": {"split": "train"}}


class IterateConfig(FileConfig):
    """Defaults: 2 rounds of the embedded CPU build -> LoRA DPO -> held-out math accuracy."""
    SECTION_DEFAULTS: ClassVar = {"build": TRAIN_BUILD}
    run_id: str = Field("iterate", description="iteration directory name (rerun the same to resume)")
    output_dir: str = "runs"
    rounds: int = Field(2, ge=1)
    model: str = Field(EMBEDDED_MODEL, description="the round-0 policy")
    evaluate_initial: bool = Field(True, description="also evaluate the round-0 policy (round_0/eval.json)")
    build: BuildConfig = Field(default_factory=section_factory(BuildConfig, TRAIN_BUILD),
                               description="sampling/scoring/selection; prompts default to the train split; "
                                           "sampler.model, run_id and output_dir are set per round")
    train: TrainConfig = Field(default_factory=TrainConfig,
                               description="pairs, model and output_dir are set per round")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="model and output are set per round")

    @model_validator(mode="after")
    def _disjoint(self):
        b, e = self.build.prompts, self.eval.prompts
        if b.path == e.path and b.format == e.format and (b.split, e.split) != ("train", "eval"):
            raise ValueError("build.prompts.split must be 'train' and eval.prompts.split 'eval' when both read the "
                             f"same prompts (got {b.split!r} / {e.split!r}): evaluation must be held out")
        if b.path == e.path and b.eval_fraction != e.eval_fraction:
            raise ValueError("build and eval prompts need the same eval_fraction, or the splits overlap")
        return self
