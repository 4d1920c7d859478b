"""What a build_pairs run costs before it starts (`--dry-run`) and the bounds its token budget checks.

Per prompt the policy generates at most k x max_new_tokens beside its prompt tokens (pipelines/core/cost.py).
The judges among the scorers (`judge`, `pairwise_judge`) make calls of their own: pointwise one per candidate,
pairwise k(k-1) per prompt (both orders of every pair); each call is bounded by its rendered judge prompt (the
MT-Bench template around the question, counted with the policy's tokenizer) + the answers it shows at
max_new_tokens each + the judge's own max_new_tokens. Judge tokens are shown, not budgeted: the budget stops
sampling, and a judge's calls follow the candidates a batch sampled.
"""

from __future__ import annotations

import pandas as pd

from pipelines.core import cost
from pipelines.core.run import plan_batches

JUDGES = {"judge": ("single-v1", "single-math-v1", 1), "pairwise_judge": ("pair-v2", "pair-math-v1", 2)}


def generated_per_prompt(config) -> int:
    return config.sampler.k * config.sampler.max_new_tokens


def batch_bounds(run) -> list[int]:
    """Each batch's bound for the budget (loads the tokenizer only)."""
    count, _ = cost.prompt_counter(run.config.sampler)
    per_prompt = cost.prompt_tokens(run.prompts(), count)
    return cost.batch_bounds(run.batches, per_prompt, generated_per_prompt(run.config))


def judge_line(scorer, config, prompts: pd.DataFrame, count) -> str:
    """"judge (pointwise): 128 calls, <= 96,512 tokens" for one judge scorer."""
    from scorers.judge import render_question
    plain, math, answers = JUDGES[scorer.name]
    k, max_new = config.sampler.k, config.sampler.max_new_tokens
    judge_new = int(scorer.params.get("max_new_tokens", 512))
    per_prompt_calls = k if answers == 1 else k * (k - 1)
    templates = _templates(scorer.params)
    tokens, note = 0, ""
    for messages, reference in zip(prompts["messages"], prompts["reference"]):
        has_reference = reference is not None and not pd.isna(reference)
        if templates is None:
            rendered = count([dict(m) for m in messages])
            note = " (MT-Bench judge prompts not installed: their template text is not counted)"
        else:
            system, template = templates[math if has_reference else plain]
            user = template.format(question=render_question([dict(m) for m in messages]), answer="", answer_a="",
                                   answer_b="", ref_answer_1=str(reference) if has_reference else "")
            rendered = count(([{"role": "system", "content": system}] if system else []) +
                             [{"role": "user", "content": user}])
        tokens += per_prompt_calls * (rendered + answers * max_new + judge_new)
    kind = "pointwise" if answers == 1 else "pairwise, both orders"
    return (f"judge calls: {scorer.name} ({kind}): {per_prompt_calls * len(prompts):,} calls, <= {tokens:,} "
            f"tokens (judge max_new_tokens {judge_new}){note}")


def _templates(params: dict) -> dict[str, tuple[str, str]] | None:
    """template name -> (system prompt, prompt template), as the judge picks them; None without the data."""
    if params.get("prompt_template"):
        custom = (params.get("system_prompt") or "", params["prompt_template"])
        return {name: custom for pair in JUDGES.values() for name in pair[:2]}
    try:
        from scorers.mtbench import judge_prompts
        prompts = judge_prompts()
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    chosen = params.get("template", "auto")
    return {name: (prompts[chosen if chosen != "auto" else name]["system_prompt"],
                   prompts[chosen if chosen != "auto" else name]["prompt_template"])
            for pair in JUDGES.values() for name in pair[:2] if (chosen if chosen != "auto" else name) in prompts}


def dry_run(config) -> str:
    """The plan of a build_pairs run: prompts, batches, the token bound, judge calls, budget, time."""
    from pipelines.loaders import load_prompts
    prompts, drops = load_prompts(config.prompts)
    batches = plan_batches(prompts["prompt_id"].tolist(), config.batch_size)
    count, counted = cost.prompt_counter(config.sampler)
    per_prompt = cost.prompt_tokens(prompts, count)
    s = config.sampler
    plan = cost.CostPlan(
        source=str(prompts["source"].iloc[0]) if len(prompts) else config.prompts.path,
        prompts=len(prompts), load_drops=len(drops), batch_sizes=[len(b.prompt_ids) for b in batches],
        sampler=f"{s.name} {s.model}, k={s.k}, max_new_tokens={s.max_new_tokens}",
        generated_formula=f"{len(prompts)} prompts x {s.k} x {s.max_new_tokens}",
        prompt_tokens=sum(per_prompt.values()), generated_bound=len(prompts) * generated_per_prompt(config),
        counted=counted, bounds=cost.batch_bounds(batches, per_prompt, generated_per_prompt(config)),
        max_total_tokens=config.budget.max_total_tokens, rate=cost.rate_of(config),
        extra=[judge_line(sc, config, prompts, count) for sc in config.scorers if sc.name in JUDGES])
    return plan.text()
