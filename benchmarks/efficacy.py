"""Data efficacy: one DPO round with pairs from max_min vs mu_2sigma vs max_random, accuracy before and after.

    nice -n 10 python benchmarks/efficacy.py                 # tiny CPU version (defaults below)
    python benchmarks/efficacy.py --train-prompts 192 --k 8 --max-new-tokens 256 --eval-prompts 46 \\
        --steps 200 --batch-size 8 --sampler vllm             # a GPU-sized run

All rules see the same samples and scores: the three builds share one output dir, and sampling/scoring shards
are keyed by prompts + sampler/scorer config, not by the rule (pipelines/pairs/build.py), so only the first build
samples. Training: LoRA DPO (sigmoid loss) from the same starting model with the same hyperparameters.
Evaluation: greedy accuracy (math-verify) on the held-out eval split of data/math_prompts.jsonl, which the
train split never contains (pipelines/loaders/records.py:split_of). Writes <out>/efficacy.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RULES = ("max_min", "mu_2sigma", "max_random")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-prompts", type=int, default=32)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--eval-tokens", type=int, default=None, help="default: --max-new-tokens")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per rule")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--sampler", default="transformers")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--out", default="benchmarks/out/efficacy")
    args = p.parse_args(argv)

    from pipelines.evaluation import evaluate
    from pipelines.evaluation.evaluate import EvalConfig
    from pipelines.pairs import build
    from pipelines.pairs.config import BuildConfig
    from pipelines.training import dpo as train
    from pipelines.training.config import TrainConfig

    eval_tokens = args.eval_tokens or args.max_new_tokens
    timings, rows = {}, []

    def evaluate_model(model: str, name: str) -> dict:
        t0 = time.perf_counter()
        result = evaluate.run(EvalConfig(
            model=model, output=f"{args.out}/eval_{name}.json",
            prompts={"split": "eval", "limit": args.eval_prompts},
            sampler={"name": args.sampler, "temperature": 0.0, "max_new_tokens": eval_tokens,
                     "batch_prompts": args.eval_prompts}))
        timings[f"eval_{name}_s"] = round(time.perf_counter() - t0, 1)
        return result

    def save(rows):
        result = {"args": vars(args), "eval_prompts": before["n"], "accuracy_before": before["accuracy"],
                  "rules": rows, "timings": timings}
        os.makedirs(args.out, exist_ok=True)
        with open(f"{args.out}/efficacy.json", "w") as f:
            json.dump(result, f, indent=2)
        return result

    before = evaluate_model(args.model, "before")
    for rule in args.rules.split(","):
        t0 = time.perf_counter()
        manifest = build.run_local(BuildConfig.model_validate({
            "run_id": rule, "output_dir": f"{args.out}/builds",
            "prompts": {"split": "train", "limit": args.train_prompts},
            "sampler": {"name": args.sampler, "model": args.model, "k": args.k,
                        "max_new_tokens": args.max_new_tokens, "batch_prompts": args.train_prompts},
            "batch_size": args.train_prompts,
            "selection": {"rule": rule}}), log=lambda m: None)
        timings[f"build_{rule}_s"] = round(time.perf_counter() - t0, 1)
        pairs_path = f"{manifest['run_dir']}/pairs.parquet"
        import pandas as pd
        pairs = pd.read_parquet(pairs_path)
        row = {"rule": rule, "pairs": len(pairs), "mean_margin": float(pairs["margin"].mean()) if len(pairs) else None,
               "chosen_correct": int((pairs["chosen_score"] >= 1.0).sum()),
               "rejected_correct": int((pairs["rejected_score"] >= 1.0).sum()),
               "accuracy_before": before["accuracy"]}
        if len(pairs):
            t0 = time.perf_counter()
            metrics = train.run(TrainConfig(pairs=[pairs_path], model=args.model, output_dir=f"{args.out}/train_{rule}",
                                            max_steps=args.steps, batch_size=args.batch_size,
                                            learning_rate=args.learning_rate, curriculum=False))
            timings[f"train_{rule}_s"] = round(time.perf_counter() - t0, 1)
            log = metrics["tiers"][0]["log"]
            after = evaluate_model(metrics["model"], rule)
            row.update(train_loss=metrics["tiers"][0]["train_loss"], final_loss=log[-1]["loss"],
                       final_reward_accuracy=log[-1].get("rewards/accuracies"),
                       final_reward_margin=log[-1].get("rewards/margins"), accuracy_after=after["accuracy"],
                       delta=after["accuracy"] - before["accuracy"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        save(rows)  # after every rule: a run cut short still leaves its finished rules

    save(rows)
    print(f"\nbefore: accuracy {before['accuracy']:.3f} on {before['n']} held-out prompts")
    print("| rule | pairs | chosen correct | mean margin | train loss | final reward acc | accuracy after | delta |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        print(f"| {r['rule']} | {r['pairs']} | {r['chosen_correct']} | {fmt(r['mean_margin'])} | "
              f"{fmt(r.get('train_loss'))} | {fmt(r.get('final_reward_accuracy'))} | "
              f"{fmt(r.get('accuracy_after'))} | {fmt(r.get('delta'))} |")
    print(f"timings: {timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
