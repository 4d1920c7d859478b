"""Accuracy of a model on held-out verifiable prompts: math with math-verify, HumanEval pass@1 by execution.

    run(EvalConfig) -> result (also written to <output>)

Responses come from our samplers (greedy by default: `temperature: 0`; or `samples` sampled responses per
prompt), scores from our scorers: `math_verify` (1.0 when the final answer equals the reference) or `execution`
(fraction of the problem's tests passed, in the sandbox). A response is correct when its score is 1.0 (for code:
every test passed). A prompt's accuracy is the mean over its responses (pass@1 estimated from `samples`
responses); the reported accuracy is the mean over prompts. A prompt that does not fit the context, or a
scorer error, counts as wrong and is listed with its reason: `n` is always the number of prompts asked.

Held out: `prompts.split: eval` (the default here) takes the prompts whose hash falls in the eval split
(pipelines/loaders/records.py:split_of); a build with `prompts.split: train` never sees them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pandas as pd

from pipelines.core import io
from pipelines.evaluation.config import EvalConfig
from pipelines.pairs import stages


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
