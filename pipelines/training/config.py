"""The train_dpo configuration: TRL DPOTrainer on a pairs Parquet, curriculum tiers in order, LoRA optional.

Same conventions as pipelines.pairs.config.BuildConfig: one pydantic model, validated before any model loads; the
Prefect flow's parameter, the `--config FILE` of the CLI and the target of `--section.field value` overrides.
Loss names are checked against the installed TRL without importing it (see `trl_loss_types`).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.core.config import EMBEDDED_MODEL, FileConfig, StrictModel


@lru_cache(maxsize=1)
def trl_loss_types() -> frozenset[str] | None:
    """The `loss_type` names the installed TRL's DPOConfig documents as accepted; None when TRL is not installed.

    Read from the source of trl/trainer/dpo_config.py (the field's help text lists them) rather than imported:
    importing TRL pulls in torch and transformers, and config validation must answer in well under 2 s.
    """
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(list(spec.submodule_search_locations)[0]) / "trainer" / "dpo_config.py"
    text = source.read_text() if source.exists() else ""
    match = re.search(r"loss_type: list\[str\] = field\(.*?Possible values are:(.*?)\.\s*If multiple", text, re.S)
    if not match:
        return None
    return frozenset(re.findall(r"'(\w+)'", match.group(1)))


# What every trained arm of the efficacy experiment used (benchmarks/RESULTS.md, "Data efficacy": LoRA r=16 on
# SmolLM2-135M, 30 steps x 8 pairs; verified pairs with this loss took held-out accuracy from 0.317 to 0.580). The SFT
# term is the NLL of the chosen response (Iterative RPO found it essential for reasoning tasks).
MEASURED_LOSS = ["sigmoid", "sft"]
MEASURED_LORA_LR = 2e-4
FULL_FINETUNE_LR = 5e-5  # not measured: the earlier default, kept for lora.enabled false


class LoraSettings(StrictModel):
    enabled: bool = Field(True, description="train a LoRA adapter (peft) instead of all weights")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field("all-linear", description="peft target_modules")


class TrainConfig(FileConfig):
    """Everything a train_dpo run needs. Defaults: LoRA on the embedded SmolLM2, DPO (sigmoid) + SFT loss 1:1 at
    lr 2e-4, as the efficacy experiment trained (MEASURED_LOSS)."""
    pairs: list[str] = Field(default_factory=list, description="pairs Parquet file(s) (PAIRS schema), concatenated")
    model: str = Field(EMBEDDED_MODEL, description="policy to start from: HF name, local dir, or the embedded default")
    output_dir: str = Field("runs/train", description="model/, metrics.json and tiers/ are written here")
    curriculum: bool = Field(True, description="train the `tier` column's tiers in order (0, 1, ...); "
                                               "False: all pairs in one pass")
    reference: Literal["initial", "previous_tier"] = Field(
        "previous_tier", description="reference model of tier i > 0: the starting model, or the model after "
                                     "tier i-1 (sDPO / Curry-DPO iterative)")
    loss_type: list[str] = Field(
        MEASURED_LOSS, min_length=1,
        description="TRL DPO loss name(s): sigmoid, ipo, robust, hinge, sft, ... The default, DPO (sigmoid) + SFT on "
                    "the chosen response, is what the efficacy experiment measured (benchmarks/RESULTS.md)")
    loss_weights: list[float] | None = Field(
        None, description="weights when several loss types are combined (None: 1.0 each, TRL's default; the "
                          "experiment's sigmoid + SFT 1:1)")
    beta: float = Field(0.1, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="robust / exo_pair")
    learning_rate: float | None = Field(
        None, gt=0.0, description=f"None: {MEASURED_LORA_LR:g} with LoRA (what the efficacy experiment measured), "
                                  f"{FULL_FINETUNE_LR:g} for full fine-tuning (not measured)")
    epochs: float = Field(1.0, gt=0.0, description="epochs per tier (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps per tier")
    batch_size: int = Field(2, ge=1, description="pairs per device step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int | None = Field(512, ge=16, description="prompt + completion tokens (TRL truncates)")
    gradient_checkpointing: bool = Field(False, description="saves memory on big models; slower")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    logging_steps: int = Field(1, ge=1)
    seed: int = 0
    weights: Literal["ignore", "error"] = Field(
        "ignore", description="the `weight` column: TRL 1.16's DPOTrainer has no per-example weights; 'ignore' "
                              "trains unweighted and counts the non-1 weights in metrics.json, 'error' refuses")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    trl_args: dict[str, Any] = Field(default_factory=dict, description="extra DPOConfig keyword arguments")

    @field_validator("pairs", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        # `--pairs runs/x/pairs.parquet` on the CLI is one path, not a list
        return [str(value)] if isinstance(value, (str, Path)) else value

    @field_validator("loss_type", mode="before")
    @classmethod
    def _loss_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, names: list[str]) -> list[str]:
        known = trl_loss_types()
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise ValueError(f"unknown DPO loss_type {unknown}; the installed TRL accepts {sorted(known)}")
        return names

    @model_validator(mode="after")
    def _weights_match(self):
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types")
        if self.loss_weights is None:  # spelled out, so metrics.json and the config print say what was trained
            self.loss_weights = [1.0] * len(self.loss_type)
        return self

    @model_validator(mode="after")
    def _learning_rate(self):
        if self.learning_rate is None:
            self.learning_rate = MEASURED_LORA_LR if self.lora.enabled else FULL_FINETUNE_LR
        return self
