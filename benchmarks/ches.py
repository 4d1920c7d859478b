"""CHES scoring throughput: batched vs batch size 1 (the reference implementation's setting), same values.

    python3 benchmarks/ches.py                                   # embedded SmolLM2 on CPU, 16 pairs
    python3 benchmarks/ches.py --device cuda --config-from DIR --pairs 256 --batch-size 32
    python3 benchmarks/ches.py --device cuda --config-from DIR --override hidden_size=2048 \\
        --override intermediate_size=8192 --override num_hidden_layers=16   # a ~1B Llama shape

--config-from DIR builds the model from DIR's config.json with random weights (no weights file needed; the
tokenizer and chat template come from DIR too), so the benchmark runs on a machine that cannot download
anything. Pairs are synthetic: deterministic word salads of varied length (CHES cost depends on token
counts, not on meaning). Prints pairs/s for both settings, the speed-up, and the largest difference between
the two score vectors relative to the scale of CHES's terms (|<h+,h->| + ||h+||^2; see the tests).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks import record  # noqa: E402
from pipelines.core import schema  # noqa: E402
from pipelines.core.config import EMBEDDED_MODEL  # noqa: E402
from pipelines.pairs.selection import SelectionContext  # noqa: E402

WORDS = ("the answer is because we add then divide so each term of sum equals number prime factor twice "
         "minus plus total value first second step check result therefore").split()


def synthetic(n_pairs: int, min_words: int, max_words: int, seed: int):
    rng = random.Random(seed)

    def salad() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) + "."

    prompts, candidates, pairs = [], [], []
    for i in range(n_pairs):
        pid = f"p{i}"
        prompts.append(dict(prompt_id=pid, source="synthetic", row=i + 1, meta="{}",
                            messages=schema.user_messages(f"Question {i}: {salad()}")))
        for j in range(2):
            candidates.append(dict(candidate_id=f"{pid}_{j}", prompt_id=pid, sample_index=j, text=salad()))
        pairs.append(dict(prompt_id=pid, chosen_id=f"{pid}_0", rejected_id=f"{pid}_1", chosen_score=1.0,
                          rejected_score=0.0, weight=1.0, tier=0, margin=1.0))
    ctx = SelectionContext(candidates=schema.frame(candidates, schema.CANDIDATES),
                           prompts=schema.frame(prompts, schema.PROMPTS))
    return pd.DataFrame(pairs), ctx


def build_policy(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from pipelines.core.devices import device_and_dtype
    from pipelines.pairs.selection.policy_stats import Policy, load_policy

    if not args.config_from:
        return load_policy(args.model, args.device, args.dtype)
    device, dtype = device_and_dtype(args.device, args.dtype)
    config = AutoConfig.from_pretrained(args.config_from)
    for item in args.override:
        key, value = item.split("=", 1)
        setattr(config, key, type(getattr(config, key))(value) if hasattr(config, key) else value)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.config_from)
    return Policy(name=f"random:{args.config_from}", model=model, tokenizer=tokenizer, device=device)


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=EMBEDDED_MODEL)
    p.add_argument("--config-from", default=None, help="directory with config.json + tokenizer: random weights")
    p.add_argument("--override", action="append", default=[], help="config key=value (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-words", type=int, default=8)
    p.add_argument("--max-words", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (best is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/ches[-cuda].json)")
    args = p.parse_args(argv)
    run = record.Run("ches", args.out)

    from pipelines.pairs.selection.ches import score_pairs

    pairs, ctx = synthetic(args.pairs, args.min_words, args.max_words, args.seed)
    policy = build_policy(args)
    n_params = sum(t.numel() for t in policy.model.parameters())
    score_pairs(pairs.head(min(4, len(pairs))), ctx, model=policy, batch_size=args.batch_size)  # warm-up
    t_one, one = timed(lambda: score_pairs(pairs, ctx, model=policy, batch_size=1), args.repeats)
    t_batch, batched = timed(lambda: score_pairs(pairs, ctx, model=policy, batch_size=args.batch_size),
                             args.repeats)

    # differences at the scale of CHES's two terms (CHES is their difference, so plain relative error of a
    # near-zero CHES says nothing about the computation); recomputed from the batch-size-1 run
    from pipelines.pairs.selection.policy_stats import pair_stats
    stats = pair_stats(pairs, ctx, policy, hidden=True, batch_size=1)
    hc, hr = stats["chosen"]["hidden_sum"], stats["rejected"]["hidden_sum"]
    nc, nr = stats["chosen"]["n_tokens"], stats["rejected"]["n_tokens"]
    dot, sq = np.einsum("nd,nd->n", hc, hr), np.einsum("nd,nd->n", hc, hc)
    scale = {"ches": np.abs(dot) + sq, "ln_ches": np.abs(dot) / (nc * nr) + sq / nc ** 2}
    diff = {c: float(np.max(np.abs(batched[c] - one[c]) / scale[c])) for c in ("ches", "ln_ches")}
    plain_rel = {c: float(np.max(np.abs(batched[c] - one[c]) / np.abs(one[c]))) for c in ("ches", "ln_ches")}
    n_tokens = int((nc + nr).sum())

    result = dict(device=policy.device, dtype=str(policy.model.dtype), params_m=round(n_params / 1e6, 1),
                  pairs=len(pairs), response_tokens=n_tokens, batch_size=args.batch_size,
                  bs1_pairs_per_s=round(len(pairs) / t_one, 2),
                  batched_pairs_per_s=round(len(pairs) / t_batch, 2), speedup=round(t_one / t_batch, 2),
                  max_diff_vs_term_scale=diff, max_plain_rel_diff=plain_rel)
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    print(f"batched is {t_one / t_batch:.2f}x faster than batch size 1 "
          f"({len(pairs) / t_batch:.1f} vs {len(pairs) / t_one:.1f} pairs/s)")
    run.write(result, name="ches-cuda" if str(policy.device).startswith("cuda") else "ches",
              model=args.config_from and f"random weights from {args.config_from} {args.override}" or args.model)
    return result


if __name__ == "__main__":
    main()
