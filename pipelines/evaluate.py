"""Accuracy of a model on held-out verifiable prompts: math with math-verify, HumanEval pass@1 by execution.

    run(EvalConfig) -> result (also written to <output>)

Responses come from our samplers (greedy by default: `temperature: 0`; or `samples` sampled responses per
prompt), scores from our scorers: `math_verify` (1.0 when the final answer equals the reference) or `execution`
(fraction of the problem's tests passed, in the sandbox). A response is correct when its score is 1.0 (for code:
every test passed). A prompt's accuracy is the mean over its responses (pass@1 estimated from `samples`
responses); the reported accuracy is the mean over prompts. A prompt that does not fit the context, or a
scorer error, counts as wrong and is listed with its reason: `n` is always the number of prompts asked.

Held out: `prompts.split: eval` (the default here) takes the prompts whose hash falls in the eval split
(pipelines/loaders.py:split_of); a build with `prompts.split: train` never sees them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from pipelines import io, stages
from pipelines.config import EMBEDDED_MODEL, FileConfig, PromptsConfig, SamplerConfig


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


def evaluate(cfg: EvalConfig, log=print) -> dict:
    """Sample, score, aggregate; nothing written."""
    from pipelines.loaders import load_prompts
    from samplers import get_sampler
    from scorers import get_scorer

    t0 = time.perf_counter()
    prompts, load_drops = load_prompts(cfg.prompts)
    if prompts.empty:
        raise ValueError(f"no prompts to evaluate in {cfg.prompts.path} (split {cfg.prompts.split!r}, "
                         f"{len(load_drops)} rows dropped at load)")
    sampler_cfg = cfg.sampler.model_copy(update={"model": cfg.model})
    sampler = get_sampler(sampler_cfg)
    # sample_stage draws cfg.k responses per prompt; k here is `samples` (1 for greedy)
    candidates, drops = stages.sample_stage(prompts, sampler, sampler_cfg.model_copy(update={"k": cfg.samples}))
    t1 = time.perf_counter()
    scorer = get_scorer(cfg.scorer_name())
    scores = scorer.score(candidates, prompts) if len(candidates) else None
    t2 = time.perf_counter()

    by_prompt: dict[str, list[dict]] = {}
    if scores is not None:
        merged = candidates.merge(scores[["candidate_id", "score", "error", "details"]], on="candidate_id")
        for row in merged.sort_values(["prompt_id", "sample_index"]).itertuples(index=False):
            score = None if pd.isna(row.score) else float(row.score)
            by_prompt.setdefault(row.prompt_id, []).append({
                "text": row.text, "score": score, "correct": score is not None and score >= 1.0,
                "error": row.error, "finish_reason": row.finish_reason})
    skipped = dict(zip(drops["prompt_id"], drops["detail"]))
    results = []
    for p in prompts.itertuples(index=False):
        responses = by_prompt.get(p.prompt_id, [])
        correct = sum(r["correct"] for r in responses)
        results.append({
            "prompt_id": p.prompt_id, "source": f"{p.source}:{p.row}",
            "prompt": next((m["content"] for m in reversed(list(p.messages)) if m["role"] == "user"), ""),
            "reference": p.reference if cfg.scorer_name() == "math_verify" else None,
            "accuracy": correct / len(responses) if responses else 0.0,
            "skipped": skipped.get(p.prompt_id), "responses": responses})
    accuracy = sum(r["accuracy"] for r in results) / len(results)
    log(f"{cfg.model}: accuracy {accuracy:.3f} on {len(results)} prompts ({cfg.scorer_name()})")
    return {
        "model": cfg.model, "accuracy": accuracy, "n": len(results), "samples": cfg.samples,
        "correct_prompts": sum(1 for r in results if r["accuracy"] == 1.0),
        "scorer": cfg.scorer_name(), "split": cfg.prompts.split, "eval_fraction": cfg.prompts.eval_fraction,
        "skipped": len(skipped), "load_drops": len(load_drops),
        "timings": {"sample_s": round(t1 - t0, 2), "score_s": round(t2 - t1, 2)},
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "config": cfg.model_dump(), "results": results,
    }


def run(cfg: EvalConfig, log=print) -> dict:
    result = evaluate(cfg, log=log)
    io.write_json(result, Path(cfg.output))
    return result


def summary_text(result: dict) -> str:
    return (f"{result['model']}: accuracy {result['accuracy']:.3f} on {result['n']} {result['split']} prompts "
            f"({result['scorer']}, {result['samples']} response(s) each)")


def read_result(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None
