"""DPO training on pairs Parquet files with TRL's DPOTrainer: curriculum tiers in order, LoRA optional.

    run(TrainConfig) -> metrics (also written to <output_dir>/metrics.json)

The Parquet feeds TRL unchanged: `load_dataset("parquet")` of the PAIRS table (conversational prompt / chosen /
rejected message lists); TRL drops the provenance columns itself. Tiers are the `tier` column's values, trained
in increasing order, each tier a fresh DPOTrainer that starts from the model the previous tier ended with.

The reference model of tier i > 0 (tier 0's is always the starting model):
- `previous_tier` (sDPO, Curry-DPO iterative): the model after tier i-1. Each tier loads its policy from the
  directory the previous tier saved, so TRL's own default is exactly this: with LoRA the reference is the loaded
  model with the (new) adapter disabled; without LoRA TRL loads a frozen copy from the same directory.
- `initial`: the starting model, loaded once more and passed to DPOTrainer as `ref_model`.

With LoRA, every tier trains a fresh adapter on the previous tier's model and merges it at the end of the tier:
`model/` is always a full, merged model that transformers and vLLM load like the original. Each tier's adapter is
kept in `tiers/tier_<t>/adapter/` (its base is the previous tier's model; tier 0's is the starting model).

Output directory:
    model/                     the trained model (+ tokenizer); the last tier's model
    tiers/tier_<t>/model/      the model after tier t, for every tier but the last (the next tier's start)
    tiers/tier_<t>/adapter/    LoRA only: that tier's adapter
    metrics.json               config, versions, per-tier TRL logs (loss, rewards/accuracies, rewards/margins, ...)

Weights: TRL 1.16's DPOTrainer has no per-example weight (huggingface/trl#5613 is open; the weighted-loss PR
#5804 was closed unmerged; `use_weighting` is WPO's policy-probability weighting, not a dataset column). The
`weight` column is therefore not used: metrics.json counts the pairs whose weight is not 1, and `weights: error`
refuses such data instead.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import io
from pipelines.core.devices import device_and_dtype
from pipelines.core.errors import UserError
from pipelines.core.models import resolve_model
from pipelines.core.versions import package_versions
from pipelines.training.config import TrainConfig

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
TRAINING_PACKAGES = ("pairsmith", "torch", "transformers", "trl", "peft", "datasets", "accelerate")
LOGGED_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
               "logps/chosen", "logps/rejected", "learning_rate", "grad_norm")


class PairsFileError(UserError, ValueError):
    """A pairs file that cannot be trained on: missing, unreadable, wrong columns, empty."""


def _conversational_or_text(field: pa.Field) -> bool:
    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type):
        names = {t.value_type.field(i).name for i in range(t.value_type.num_fields)}
        return {"role", "content"} <= names
    return False


def check_pairs_files(paths: list[str]) -> dict:
    """Validate the files before any model loads; returns {"rows", "tiers": {tier: rows}, "weighted": n}."""
    if not paths:
        raise PairsFileError("no pairs file given (set `pairs`, e.g. --pairs runs/<run_id>/pairs.parquet)")
    rows, tiers, weighted = 0, {}, 0
    for path in map(Path, paths):
        if not path.exists():
            raise PairsFileError(f"pairs file not found: {path}")
        try:
            schema = pq.read_schema(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise PairsFileError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
        if missing:
            raise PairsFileError(f"{path}: missing column(s) {missing} (has {schema.names}); a pairs file needs "
                                 f"{list(REQUIRED_COLUMNS)} (pipelines/core/schema.py:PAIRS)")
        bad = [c for c in REQUIRED_COLUMNS if not _conversational_or_text(schema.field(c))]
        if bad:
            raise PairsFileError(f"{path}: column(s) {bad} must be text or message lists (role, content), got "
                                 f"{[str(schema.field(c).type) for c in bad]}")
        extra = [c for c in ("tier", "weight") if c in schema.names]
        table = pq.read_table(path, columns=[REQUIRED_COLUMNS[0], *extra])
        if table.num_rows == 0:
            raise PairsFileError(f"{path}: no pairs (0 rows)")
        rows += table.num_rows
        tier_values = table["tier"].to_pylist() if "tier" in extra else [0] * table.num_rows
        if any(t is None for t in tier_values):
            raise PairsFileError(f"{path}: null values in column 'tier'")
        for t in tier_values:
            tiers[int(t)] = tiers.get(int(t), 0) + 1
        if "weight" in extra:
            weighted += sum(1 for w in table["weight"].to_pylist() if w is not None and w != 1.0)
    return {"rows": rows, "tiers": dict(sorted(tiers.items())), "weighted": weighted}


def curriculum_note(cfg: TrainConfig, info: dict, has_tier_column: bool) -> str | None:
    """What a curriculum that cannot order anything says (training then is plain DPO over all pairs)."""
    if not cfg.curriculum:
        return None
    if not has_tier_column:
        return (f"curriculum: true, but {cfg.pairs} has no `tier` column: training all pairs as one tier (tiers come "
                f"from the curry_tiers or rank_gap pair filters of build_pairs)")
    if len(info["tiers"]) == 1:
        (tier, rows), = info["tiers"].items()
        return (f"curriculum: true, but every pair is in tier {tier} ({rows} pairs): training them as one tier; "
                f"for tiers, build with the curry_tiers pair filter (scope: global when the rule makes one pair "
                f"per prompt) or rank_gap")
    return None


def load_pairs(paths: list[str]):
    """The files as one `datasets.Dataset`, exactly as `load_dataset("parquet")` reads them."""
    from datasets import load_dataset
    return load_dataset("parquet", data_files=[str(p) for p in paths], split="train")


def _load_model(path: str, dtype):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def _dpo_args(cfg: TrainConfig, out: Path, cuda: bool, dtype):
    import torch
    from trl import DPOConfig
    kwargs = dict(
        output_dir=str(out), loss_type=list(cfg.loss_type), loss_weights=cfg.loss_weights, beta=cfg.beta,
        label_smoothing=cfg.label_smoothing, learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        gradient_checkpointing=cfg.gradient_checkpointing, logging_steps=cfg.logging_steps, seed=cfg.seed,
        bf16=cuda and dtype == torch.bfloat16, fp16=False, use_cpu=not cuda,
        save_strategy="no", report_to="none", disable_tqdm=True)
    kwargs.update(cfg.trl_args)
    return DPOConfig(**kwargs)


def _peft_config(cfg: TrainConfig):
    from peft import LoraConfig
    lora = cfg.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def _save_atomic(model, tokenizer, dest: Path) -> None:
    """save_pretrained into a temp dir, then rename: a killed run never leaves a half model under `dest`."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _log_rows(log_history: list[dict]) -> tuple[list[dict], dict]:
    """TRL's log history -> (per logging step rows with the DPO metrics, the end-of-training summary)."""
    steps = [{"step": h.get("step"), **{k: h[k] for k in LOGGED_KEYS if k in h}}
             for h in log_history if "loss" in h]
    summary = next((h for h in reversed(log_history) if "train_loss" in h), {})
    return steps, summary


def train_tier(cfg: TrainConfig, dataset, tier: int | None, start: str, reference: str | None, dest: Path,
               work: Path, log=print) -> dict:
    """One DPOTrainer run from `start`; saves the (merged) model to `dest`. reference None: TRL's default."""
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    device, dtype = device_and_dtype("auto", cfg.dtype)
    cuda = device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(start)
    model = _load_model(start, dtype)
    ref_model = _load_model(reference, dtype) if reference is not None else None
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=_dpo_args(cfg, work / "trainer", cuda, dtype),
                         train_dataset=dataset, processing_class=tokenizer,
                         peft_config=_peft_config(cfg) if cfg.lora.enabled else None)
    t0 = time.perf_counter()
    import torch
    with torch.enable_grad():  # a sampler loaded in this thread turns grad off globally (samplers/transformers_backend)
        trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if cfg.lora.enabled:
        trained.save_pretrained(work / "adapter")
        trained = trained.merge_and_unload()
    _save_atomic(trained, tokenizer, dest)
    steps, summary = _log_rows(trainer.state.log_history)
    log(f"tier {tier}: {len(dataset)} pairs, {trainer.state.global_step} steps in {seconds:.1f}s -> {dest}")
    return {"tier": tier, "pairs": len(dataset), "start_model": start,
            "reference_model": reference or start, "steps": trainer.state.global_step,
            "train_seconds": round(seconds, 2), "train_loss": summary.get("train_loss"), "log": steps,
            "model": str(dest), "adapter": str(work / "adapter") if cfg.lora.enabled else None}


def run(cfg: TrainConfig, log=print) -> dict:
    """Train every tier in order; write model/ and metrics.json under cfg.output_dir; return the metrics."""
    info = check_pairs_files(cfg.pairs)
    if info["weighted"] and cfg.weights == "error":
        raise PairsFileError(f"{info['weighted']} pairs have weight != 1 in {cfg.pairs}, and TRL's DPOTrainer "
                             f"cannot weight examples (set weights: ignore to train unweighted)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    initial = resolve_model(cfg.model)
    dataset = load_pairs(cfg.pairs)
    tiers = list(info["tiers"]) if cfg.curriculum and "tier" in dataset.column_names else [None]
    note = curriculum_note(cfg, info, "tier" in dataset.column_names)
    if note:
        log(note)
    results, start = [], initial
    for i, tier in enumerate(tiers):
        part = dataset if tier is None else dataset.filter(lambda t, want=tier: t == want, input_columns="tier")
        last = i == len(tiers) - 1
        dest = out / "model" if last else out / "tiers" / f"tier_{tier}" / "model"
        dest.parent.mkdir(parents=True, exist_ok=True)
        reference = initial if (cfg.reference == "initial" and i > 0) else None
        results.append(train_tier(cfg, part, tier, start, reference, dest,
                                  out / "tiers" / f"tier_{tier if tier is not None else 'all'}", log=log))
        start = str(dest)
    metrics = {
        "output_dir": str(out), "model": str(out / "model"), "initial_model": initial,
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 2),
        "pairs": info["rows"], "tiers": results, "reference": cfg.reference, "curriculum_note": note,
        "weights": {"used": False, "pairs_with_weight_not_1": info["weighted"],
                    "why": "TRL's DPOTrainer has no per-example weights (huggingface/trl#5613)"},
        "config": cfg.model_dump(), "versions": package_versions(TRAINING_PACKAGES),
    }
    io.write_json(metrics, out / "metrics.json")  # written last: its presence marks a finished training
    return metrics


def summary_text(metrics: dict) -> str:
    lines = [f"trained {metrics['pairs']} pairs in {len(metrics['tiers'])} tier(s) -> {metrics['model']}"]
    for t in metrics["tiers"]:
        last = t["log"][-1] if t["log"] else {}
        lines.append(f"  tier {t['tier']}: {t['pairs']} pairs, {t['steps']} steps, train_loss {t['train_loss']}, "
                     f"last rewards/accuracies {last.get('rewards/accuracies')}, "
                     f"rewards/margins {last.get('rewards/margins')}")
    if metrics.get("curriculum_note"):
        lines.append(metrics["curriculum_note"])
    return "\n".join(lines)


def read_metrics(output_dir: str | Path) -> dict | None:
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None
