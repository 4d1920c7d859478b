"""DPO training speed: optimizer steps per second of the train_dpo code (pipelines.training.dpo, TRL's DPOTrainer).

    python benchmarks/training.py                                    # embedded SmolLM2 on CPU, LoRA, 8 steps
    python benchmarks/training.py --config-from DIR --steps 30 --batch-size 8 --max-length 512   # GPU, random weights
    python benchmarks/training.py --no-lora ...                      # full fine-tuning

Pairs: synthetic by default (the shipped math prompts, word-salad responses of --response-words words, written
as a PAIRS Parquet: the same file train_dpo reads), or --pairs FILE. Timing: the start of every training step is
stamped; steps/s = the intervals between the starts of the steps after the first --warmup (each interval is one
whole step: forward, backward, optimizer, data loading), so model loading, the first steps' kernel warm-up and
the saving at the end are left out. TRL is needed: without it the benchmark says so and writes a JSON with status
"skipped".
Results: benchmarks/results/training[-cuda].json (command, machine, load average, figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import record  # noqa: E402

WORDS = ("the answer is because we add then divide so each term of sum equals number prime factor twice "
         "minus plus total value first second step check result therefore").split()


def synthetic_pairs(n: int, words: int, seed: int, path: Path) -> Path:
    """n pairs in the PAIRS schema: the shipped prompts, word-salad chosen/rejected of about `words` words."""
    import pyarrow.parquet as pq

    from pipelines.core import schema
    from pipelines.core.config import PromptsConfig
    from pipelines.loaders import load_prompts
    prompts, _ = load_prompts(PromptsConfig(limit=None))
    rng = random.Random(seed)

    def salad() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words))) + "."

    rows = []
    for i in range(n):
        p = prompts.iloc[i % len(prompts)]
        rows.append(dict(pair_id=f"pair{i}", prompt_id=p["prompt_id"], prompt=list(p["messages"]),
                         chosen=[{"role": "assistant", "content": salad()}],
                         rejected=[{"role": "assistant", "content": salad()}],
                         chosen_id=f"c{i}", rejected_id=f"r{i}", chosen_score=1.0, rejected_score=0.0, margin=1.0,
                         rule="synthetic", weight=1.0, tier=0, model="synthetic"))
    import pandas as pd
    pq.write_table(schema.to_table(pd.DataFrame(rows), schema.PAIRS), path)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--config-from", default=None, help="config.json + tokenizer directory: random weights")
    p.add_argument("--override", action="append", default=[], help="config key=value (repeatable)")
    p.add_argument("--pairs", default=None, help="a PAIRS Parquet (default: synthetic pairs)")
    p.add_argument("--n-pairs", type=int, default=64)
    p.add_argument("--response-words", type=int, default=96)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the rate")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/training[-cuda].json)")
    args = p.parse_args(argv)
    run = record.Run("training", args.out)
    if args.steps <= args.warmup + 1:
        p.error("--steps must exceed --warmup + 1")

    if importlib.util.find_spec("trl") is None:
        print("skipped: TRL is not installed here (pip install trl==1.16.0, or carry its wheel: "
              "benchmarks/gpu_suite.py prepare)")
        run.write({"status": "skipped", "why": "trl not installed"})
        return {"status": "skipped"}

    import torch
    import trl

    from benchmarks.sampling import random_model
    from pipelines.training import dpo
    from pipelines.training.config import LoraSettings, TrainConfig

    work = Path(tempfile.mkdtemp(prefix="pairsmith-train-bench-"))
    model = random_model(args.config_from, args.override, args.dtype, args.seed) if args.config_from else args.model
    pairs = Path(args.pairs) if args.pairs else synthetic_pairs(args.n_pairs, args.response_words, args.seed,
                                                                work / "pairs.parquet")
    cfg = TrainConfig(pairs=[str(pairs)], model=model, output_dir=str(work / "out"), curriculum=False,
                      max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                      dtype=args.dtype, logging_steps=args.steps, seed=args.seed,
                      lora=LoraSettings(enabled=args.lora))

    stamps: list[float] = []
    step = trl.DPOTrainer.training_step

    def stamped(self, *a, **kw):  # the start of each optimizer step (gradient_accumulation_steps is 1)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return step(self, *a, **kw)

    trl.DPOTrainer.training_step = stamped
    try:
        t0 = time.perf_counter()
        metrics = dpo.run(cfg, log=print)
        wall = time.perf_counter() - t0
    finally:
        trl.DPOTrainer.training_step = step
    tier = metrics["tiers"][0]
    timed = stamps[args.warmup:]  # starts of the timed steps: each interval is one whole step
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0])
    cuda = torch.cuda.is_available()
    result = dict(device=torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
                  model=str(model), lora=args.lora, dtype=args.dtype, steps=tier["steps"], warmup_steps=args.warmup,
                  batch_size=args.batch_size, max_length=args.max_length, pairs=metrics["pairs"],
                  steps_per_s=round(steps_per_s, 3), pairs_per_s=round(steps_per_s * args.batch_size, 2),
                  train_seconds=tier["train_seconds"], wall_seconds=round(wall, 1), train_loss=tier["train_loss"],
                  versions={k: metrics["versions"].get(k) for k in ("torch", "transformers", "trl", "peft")})
    for k, v in result.items():
        print(f"{k:>16}: {v}")
    print(f"DPO training: {steps_per_s:.2f} steps/s ({steps_per_s * args.batch_size:.1f} pairs/s) after "
          f"{args.warmup} warm-up steps")
    run.write(result, name="training-cuda" if cuda else "training")
    return result


if __name__ == "__main__":
    main()
