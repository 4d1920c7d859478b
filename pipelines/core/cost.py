"""What a run will cost before it starts (`--dry-run`), and the token bounds its budget checks.

Tokens are the policy's: each prompt once (its chat-templated length, counted with the model's tokenizer, the
only part of the model a dry run loads) + the most the build can generate for it (build_pairs: k x max_new_tokens;
build_step_pairs: the cost formula, StepPairsConfig.token_bound). A batch's bound is the sum over its prompts; the
budget (`budget.max_total_tokens`, pipelines/core/executors.py) starts a batch only while the tokens spent so far
plus its bound fit. Judge calls of the scorers are bounded beside the policy's tokens (the build computes them).

Time = the generated bound / generated tokens per second: configured (`budget.tokens_per_second`) or measured by
the newest finished run of the same sampler and model in `output_dir` (its manifest's `token_use`). It is an
upper estimate (responses that stop early take less) and leaves out loading the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from pipelines.core.progress import duration

Counter = Callable[[list[dict]], int]
CHARS_PER_TOKEN = 4  # the fallback when no tokenizer loads (a remote model name): an estimate, and said so


def prompt_counter(sampler_cfg) -> tuple[Counter, str]:
    """(messages -> chat-templated prompt tokens, how they are counted). Loads the tokenizer only."""
    from pipelines.core.models import load_tokenizer
    try:
        tokenizer = load_tokenizer(sampler_cfg.model)
    except (OSError, ValueError, ImportError) as e:  # not a local or cached model: estimate from characters
        why = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
        return (lambda messages: sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + 8,
                f"estimated at {CHARS_PER_TOKEN} characters per token (no tokenizer for {sampler_cfg.model!r}: "
                f"{why})")

    def count(messages: list[dict]) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count, "counted with the model's tokenizer"


def prompt_tokens(prompts: pd.DataFrame, count: Counter) -> dict[str, int]:
    """prompt_id -> its prompt tokens."""
    return {pid: count([dict(m) for m in messages]) for pid, messages in zip(prompts["prompt_id"],
                                                                             prompts["messages"])}


def batch_bounds(batches, per_prompt: dict[str, int], generated_per_prompt: int) -> list[int]:
    """Each batch's token bound: its prompts' tokens + generated_per_prompt for each."""
    return [sum(per_prompt[pid] + generated_per_prompt for pid in b.prompt_ids) for b in batches]


def batches_within(bounds: list[int], limit: int | None) -> int:
    """How many batches a budget covers if every one used its whole bound (the dry run's promise: the run may
    do more, since batches that stop early leave room)."""
    if limit is None:
        return len(bounds)
    spent = 0
    for i, bound in enumerate(bounds):
        if spent + bound > limit:
            return i
        spent += bound
    return len(bounds)


def measured_rate(output_dir: str | Path, sampler_cfg) -> tuple[float, str] | None:
    """(generated tokens/s, where it was measured) from the newest manifest in output_dir whose sampler name and
    model match and which computed something; None if there is none."""
    found = []
    for path in Path(output_dir).glob("*/manifest.json"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        sampler = (manifest.get("config") or {}).get("sampler") or {}
        rate = (manifest.get("token_use") or {}).get("generated_per_second")
        if rate and sampler.get("name") == sampler_cfg.name and sampler.get("model") == sampler_cfg.model:
            found.append((path.stat().st_mtime, float(rate), str(path.parent)))
    if not found:
        return None
    _, rate, where = max(found)
    return rate, f"measured in {where}"


@dataclass
class CostPlan:
    """A dry run's figures; `text()` is what the CLI prints."""
    source: str
    prompts: int
    load_drops: int
    batch_sizes: list[int]
    sampler: str                        # "transformers embedded:..., k=4, max_new_tokens=128"
    generated_formula: str              # "32 prompts x 4 x 128"
    prompt_tokens: int
    generated_bound: int
    counted: str                        # how the prompt tokens were counted
    bounds: list[int]
    max_total_tokens: int | None
    rate: tuple[float, str] | None      # (generated tokens/s, where from)
    extra: list[str] = field(default_factory=list)  # the build's own lines (judge calls, ...)

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.generated_bound

    @property
    def seconds(self) -> float | None:
        return self.generated_bound / self.rate[0] if self.rate else None

    def text(self) -> str:
        sizes = self.batch_sizes
        shape = f"{len(sizes)} x {sizes[0]}" if sizes and len(set(sizes)) == 1 else \
            ", ".join(map(str, sizes)) or "none"
        lines = [
            "dry run: prompts loaded and counted; no model loaded, nothing sampled or written",
            f"prompts: {self.prompts} from {self.source}" + (f" ({self.load_drops} dropped at load)"
                                                            if self.load_drops else ""),
            f"batches: {len(sizes)} ({shape} prompts)",
            f"sampler: {self.sampler}",
            f"token bound: {self.prompt_tokens:,} prompt + {self.generated_bound:,} generated "
            f"({self.generated_formula}) = {self.total:,} tokens; prompt tokens {self.counted}",
            *self.extra,
        ]
        if self.max_total_tokens is not None:
            covered = batches_within(self.bounds, self.max_total_tokens)
            if covered == len(sizes):
                lines.append(f"budget: max_total_tokens {self.max_total_tokens:,} covers all {len(sizes)} batches "
                             f"at their bound")
            else:
                lines.append(f"budget: max_total_tokens {self.max_total_tokens:,} covers {covered} of {len(sizes)} "
                             f"batches at their bound (more if responses stop early); the prompts of batches not "
                             f"run are dropped as budget_exhausted")
        if self.rate:
            lines.append(f"time: sampling at most {duration(self.seconds)} at {self.rate[0]:.1f} generated "
                         f"tokens/s ({self.rate[1]}), plus loading the model")
        else:
            lines.append("time: unknown (no tokens/s: set --budget.tokens_per_second, or finish one run of this "
                         "sampler and model in output_dir)")
        return "\n".join(lines)


def rate_of(config) -> tuple[float, str] | None:
    """The configured rate, else the measured one."""
    if config.budget.tokens_per_second:
        return config.budget.tokens_per_second, "budget.tokens_per_second"
    return measured_rate(config.output_dir, config.sampler)
