"""Iterative on-policy DPO rounds (Iterative DPO / Iterative RPO / Sweet Spot's iterative setting).

    run(IterateConfig) -> the rounds manifest (also <output_dir>/<run_id>/rounds.json)

Round r (1..rounds) samples with the policy of round r-1 (round 0's policy is `model`), scores and selects with
the build config, trains on the pairs starting from that policy (the reference of round r is its start policy,
as TRL does by default), then evaluates the new model on the held-out split. Sampling seed: build.sampler.seed + r.

Directory <output_dir>/<run_id>/:
    rounds.json                the manifest: config hash, one record per round (policy, pairs, model, accuracy)
    builds/round_<r>/          build_pairs' run directory (pairs.parquet, drops, manifest.json); builds/.cache shards
    round_<r>/train/           train_dpo's output (model/, metrics.json)
    round_<r>/eval.json        evaluate's result (round_0/eval.json: the starting model, if evaluate_initial)

Resume by round and by phase: a phase whose output marker exists (the build's manifest.json, the training's
metrics.json, eval.json; each written last and atomically) is not run again, so rerunning a finished iteration
trains nothing. A round whose build gives no pair keeps its policy (status `no_pairs`) and is not trained.
Rerunning with another config under the same run_id is refused (the manifest keeps the config hash).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.core import ids, io
from pipelines.evaluation import evaluate as ev
from pipelines.evaluation.config import EvalConfig
from pipelines.iteration.config import IterateConfig
from pipelines.pairs.config import BuildConfig
from pipelines.training import dpo
from pipelines.training.config import TrainConfig


@dataclass
class RoundPhases:
    """What one round does, phase by phase; the Prefect flow passes task-wrapped versions."""
    build: Callable[[BuildConfig], dict]
    train: Callable[[TrainConfig], dict]
    evaluate: Callable[[EvalConfig], dict]


def local_phases() -> RoundPhases:
    from pipelines.pairs.build import run_local
    return RoundPhases(build=run_local, train=dpo.run, evaluate=ev.run)


def _config_hash(cfg: IterateConfig) -> str:
    return ids.stable_hash(cfg.model_dump(exclude={"rounds"}), length=12)  # more rounds later: same iteration


def run(cfg: IterateConfig, phases: RoundPhases | None = None, log=print) -> dict:
    phases = phases or local_phases()
    root = Path(cfg.output_dir) / cfg.run_id
    manifest_path = root / "rounds.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else \
        {"run_id": cfg.run_id, "config_hash": _config_hash(cfg), "config": cfg.model_dump(), "rounds": []}
    if manifest["config_hash"] != _config_hash(cfg):
        raise ValueError(f"{manifest_path} was written by another configuration; use a new run_id "
                         f"(or the original config) to resume")
    records = {r["round"]: r for r in manifest["rounds"]}
    activity = {"built": [], "trained": [], "evaluated": []}

    def save():
        manifest["rounds"] = [records[k] for k in sorted(records)]
        manifest["rounds_requested"] = cfg.rounds
        manifest["updated"] = dt.datetime.now().isoformat(timespec="seconds")
        io.write_json(manifest, manifest_path)

    def evaluate(model: str, out: Path) -> dict:
        result = ev.read_result(out)
        if result is None:
            result = phases.evaluate(cfg.eval.model_copy(update={"model": model, "output": str(out)}))
            activity["evaluated"].append(str(out))
        return {"accuracy": result["accuracy"], "n": result["n"], "path": str(out)}

    if cfg.evaluate_initial:
        records[0] = {"round": 0, "status": "done", "model": cfg.model,
                      "eval": evaluate(cfg.model, root / "round_0" / "eval.json")}
        save()
    policy = cfg.model
    for r in range(1, cfg.rounds + 1):
        record = records.get(r, {"round": r})
        record["policy"] = policy
        build_cfg = cfg.build.model_copy(update={
            "run_id": f"round_{r}", "output_dir": str(root / "builds"),
            "sampler": cfg.build.sampler.model_copy(update={"model": policy, "seed": cfg.build.sampler.seed + r})})
        build_manifest = root / "builds" / f"round_{r}" / "manifest.json"
        if build_manifest.exists():
            built = json.loads(build_manifest.read_text())
        else:
            log(f"round {r}: sampling with {policy}")
            built = phases.build(build_cfg)
            activity["built"].append(r)
        record.update(pairs=str(Path(built["run_dir"]) / "pairs.parquet"), n_pairs=built["counts"]["pairs"],
                      build_dir=built["run_dir"])
        if record["n_pairs"] == 0:
            record.update(status="no_pairs", model=policy, eval=records.get(r - 1, {}).get("eval"))
            records[r] = record
            save()
            log(f"round {r}: no pairs; the policy is kept")
            continue
        train_dir = root / f"round_{r}" / "train"
        metrics = dpo.read_metrics(train_dir)
        if metrics is None:
            log(f"round {r}: training on {record['n_pairs']} pairs")
            metrics = phases.train(cfg.train.model_copy(update={
                "pairs": [record["pairs"]], "model": policy, "output_dir": str(train_dir)}))
            activity["trained"].append(r)
        record.update(model=metrics["model"], train_loss=[t["train_loss"] for t in metrics["tiers"]],
                      train_steps=sum(t["steps"] for t in metrics["tiers"]))
        records[r] = record
        save()
        record["eval"] = evaluate(metrics["model"], root / f"round_{r}" / "eval.json")
        record["status"] = "done"
        save()
        log(f"round {r}: accuracy {record['eval']['accuracy']:.3f} ({record['eval']['n']} held-out prompts)")
        policy = record["model"]
    return {**manifest, "this_run": activity, "path": str(manifest_path)}


def summary_text(result: dict) -> str:
    lines = [f"iteration {result['run_id']} -> {result['path']}"]
    for r in result["rounds"]:
        acc = r.get("eval") or {}
        lines.append(f"  round {r['round']}: {r['status']}, pairs {r.get('n_pairs', '-')}, "
                     f"accuracy {acc.get('accuracy', float('nan')):.3f}, model {r.get('model')}")
    act = result["this_run"]
    lines.append(f"  this run: built {act['built']}, trained {act['trained']}, evaluated {len(act['evaluated'])}")
    return "\n".join(lines)
