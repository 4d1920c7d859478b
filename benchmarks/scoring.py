"""Reward-model scoring throughput: length-sorted batches vs batches in arrival order vs one sample at a time.

    python3 benchmarks/scoring.py                                    # CPU: SmolLM2-135M-shaped classifier
    python3 benchmarks/scoring.py --device cuda --hidden-size 2048 --layers 16 --samples 512   # ~1B on a GPU

The classifier is a LlamaForSequenceClassification built from a config with random weights (seeded): the
SmolLM2-135M shape by default (hidden 576, 30 layers, 9 heads / 3 KV heads, vocab 49152), other sizes by flag.
Nothing is downloaded, so it runs unchanged on an offline GPU machine. Inputs are random token sequences with
lengths drawn uniformly from [--min-tokens, --max-tokens], as a scorer sees them after chat formatting.
All three ways must give the same scores (asserted; bf16 within a tolerance); samples/s and ratios printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import record  # noqa: E402


def build_model(args):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification
    heads = args.hidden_size // 64
    kv_heads = args.kv_heads or (heads // 3 if heads % 3 == 0 else heads // 4)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        intermediate_size=args.intermediate_size or round(args.hidden_size * 8 / 3 / 64) * 64,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=8192,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"}, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2, num_labels=1)
    torch.manual_seed(args.seed)
    model = LlamaForSequenceClassification(config)
    return model, sum(p.numel() for p in model.parameters())


def timed(fn, device: str):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--hidden-size", type=int, default=576)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--intermediate-size", type=int, default=None)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/scoring[-cuda].json)")
    args = p.parse_args(argv)
    run = record.Run("scoring", args.out)

    import numpy as np
    import torch

    from pipelines.core.devices import device_and_dtype
    from scorers.reward_backends import TransformersRewardEngine

    device, dtype = device_and_dtype(args.device, args.dtype)
    model, n_params = build_model(args)
    engine = TransformersRewardEngine("", device=device, model=model.to(dtype))
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.min_tokens, args.max_tokens + 1, size=args.samples)
    encodings = [{"input_ids": rng.integers(3, 49152, size=int(n)).tolist()} for n in lengths]

    engine.run(encodings[:4], 4)  # warm-up (kernels, allocator)
    naive, t_naive = timed(lambda: [engine.forward([e])[0] for e in encodings], device)
    arrival, t_arrival = timed(lambda: [v for s in range(0, len(encodings), args.batch_size)
                                        for v in engine.forward(encodings[s:s + args.batch_size])], device)
    sorted_, t_sorted = timed(lambda: engine.run(encodings, args.batch_size), device)

    naive, arrival, sorted_ = (np.stack(x)[:, 0] for x in (naive, arrival, sorted_))
    atol = 1e-3 if dtype == torch.float32 else 0.05 * float(np.std(naive)) + 1e-2
    diff = float(max(np.abs(sorted_ - naive).max(), np.abs(arrival - naive).max()))
    assert diff <= atol, f"batched scores differ from one-at-a-time by {diff} (> {atol})"

    cuda = device.startswith("cuda")
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).replace("torch.", ""), "params_M": round(n_params / 1e6, 1),
        "hidden": args.hidden_size, "layers": args.layers, "samples": args.samples, "batch_size": args.batch_size,
        "tokens": f"{args.min_tokens}-{args.max_tokens} (mean {lengths.mean():.0f})",
        "one_at_a_time_per_s": round(args.samples / t_naive, 2),
        "batched_arrival_order_per_s": round(args.samples / t_arrival, 2),
        "batched_length_sorted_per_s": round(args.samples / t_sorted, 2),
        "sorted_vs_one_at_a_time": round(t_naive / t_sorted, 2),
        "sorted_vs_arrival_order": round(t_arrival / t_sorted, 2),
        "max_abs_score_diff": diff,
    }
    print(json.dumps(result, indent=1))
    print(f"\nlength-sorted batches: {result['batched_length_sorted_per_s']} samples/s, "
          f"{result['sorted_vs_one_at_a_time']}x one-at-a-time ({result['one_at_a_time_per_s']}/s), "
          f"{result['sorted_vs_arrival_order']}x arrival-order batches ({result['batched_arrival_order_per_s']}/s); "
          f"same scores (max diff {diff:.2e})")
    run.write(result, name="scoring-cuda" if cuda else "scoring")
    return result


if __name__ == "__main__":
    main()
