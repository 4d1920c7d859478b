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

Resume by round and by step: a step whose output marker exists (the build's manifest.json, the training's
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

from pydantic import Field, model_validator

from pipelines import evaluate as ev
from pipelines import io, schema, train
from pipelines.config import EMBEDDED_MODEL, BuildConfig, FileConfig, PromptsConfig
from pipelines.evaluate import EvalConfig
from pipelines.train_config import TrainConfig


def _train_prompts_build() -> BuildConfig:
    return BuildConfig(prompts=PromptsConfig(split="train"))


class IterateConfig(FileConfig):
    """Defaults: 2 rounds of the embedded CPU build -> LoRA DPO -> held-out math accuracy."""
    run_id: str = Field("iterate", description="iteration directory name (rerun the same to resume)")
    output_dir: str = "runs"
    rounds: int = Field(2, ge=1)
    model: str = Field(EMBEDDED_MODEL, description="the round-0 policy")
    evaluate_initial: bool = Field(True, description="also evaluate the round-0 policy (round_0/eval.json)")
    build: BuildConfig = Field(default_factory=_train_prompts_build,
                               description="sampling/scoring/selection; prompts default to the train split; "
                                           "sampler.model, run_id and output_dir are set per round")
    train: TrainConfig = Field(default_factory=TrainConfig,
                               description="pairs, model and output_dir are set per round")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="model and output are set per round")

    @model_validator(mode="before")
    @classmethod
    def _train_split(cls, data):
        # a partial build.prompts section still means the train split (eval is held out)
        if isinstance(data, dict) and isinstance(data.get("build"), dict):
            build = dict(data["build"])
            build["prompts"] = {"split": "train", **(build.get("prompts") or {})}
            data = {**data, "build": build}
        return data

    @model_validator(mode="after")
    def _disjoint(self):
        b, e = self.build.prompts, self.eval.prompts
        if b.path == e.path and b.format == e.format and (b.split, e.split) != ("train", "eval"):
            raise ValueError("build.prompts.split must be 'train' and eval.prompts.split 'eval' when both read the "
                             f"same prompts (got {b.split!r} / {e.split!r}): evaluation must be held out")
        if b.path == e.path and b.eval_fraction != e.eval_fraction:
            raise ValueError("build and eval prompts need the same eval_fraction, or the splits overlap")
        return self


@dataclass
class Steps:
    """The three steps of a round; the Prefect flow passes task-wrapped versions."""
    build: Callable[[BuildConfig], dict]
    train: Callable[[TrainConfig], dict]
    evaluate: Callable[[EvalConfig], dict]


def local_steps() -> Steps:
    from pipelines.build import run_local
    return Steps(build=run_local, train=train.run, evaluate=ev.run)


def _config_hash(cfg: IterateConfig) -> str:
    return schema.stable_hash(cfg.model_dump(exclude={"rounds"}), length=12)  # more rounds later: same iteration


def run(cfg: IterateConfig, steps: Steps | None = None, log=print) -> dict:
    steps = steps or local_steps()
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
            result = steps.evaluate(cfg.eval.model_copy(update={"model": model, "output": str(out)}))
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
            built = steps.build(build_cfg)
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
        metrics = train.read_metrics(train_dir)
        if metrics is None:
            log(f"round {r}: training on {record['n_pairs']} pairs")
            metrics = steps.train(cfg.train.model_copy(update={
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
