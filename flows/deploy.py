"""Serve pairsmith's flows as Prefect deployments: a form in the UI, `prefect deployment run`, cron schedules.

    prefect server start                                   # the UI at http://127.0.0.1:4200 (docs/prefect.md)
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy            # serve every flow
    python -m flows.deploy --only build-pairs --config build-pairs=configs/humaneval.yaml --schedules-active

One process registers a deployment per flow and runs what the server schedules or the UI triggers
(`prefect.serve`: no work pool or worker needed). Each deployment's parameter is the flow's pydantic config, so
the UI renders it as a form and the server rejects values the model rejects (enforce_parameter_schema). Its
default parameters are the config's defaults, or a config file given with --config. Schedules: one cron
per flow, created *paused* unless --schedules-active (a schedule that burns hours of compute should be a
decision). prefect.yaml describes the same deployments for `prefect deploy` with a process work pool.

Adding a flow is one line in FLOWS.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from pipelines.core.registry import load_object


@dataclass(frozen=True)
class FlowEntry:
    module: str            # the flow module; its flow object is the attribute `attr`
    attr: str
    config: str            # "module:Class" of the flow's pydantic config (its `config` parameter)
    cron: str              # schedule, UTC; paused unless --schedules-active
    description: str


FLOWS: dict[str, FlowEntry] = {
    "build-pairs": FlowEntry("flows.build_pairs", "build_pairs", "pipelines.pairs.config:BuildConfig", "0 2 * * *",
                             "prompts -> k samples -> scores -> chosen/rejected pairs (TRL-ready Parquet)"),
    "build-step-pairs": FlowEntry("flows.build_step_pairs", "build_step_pairs",
                                  "pipelines.step_pairs.config:StepPairsConfig", "0 4 * * *",
                                  "MCTS / first-error step-level pairs"),
    "train-dpo": FlowEntry("flows.train_dpo", "train_dpo", "pipelines.training.config:TrainConfig", "0 6 * * *",
                           "pairs Parquet -> TRL DPOTrainer (LoRA or full, curriculum tiers) -> model + metrics"),
    "evaluate": FlowEntry("flows.evaluate", "evaluate", "pipelines.evaluation.config:EvalConfig", "0 8 * * *",
                          "held-out accuracy of a model (math-verify, HumanEval pass@1)"),
    "iterate": FlowEntry("flows.iterate", "iterate", "pipelines.iteration.config:IterateConfig", "0 1 * * 0",
                         "on-policy rounds: sample with the last policy -> pairs -> DPO -> held-out accuracy"),
}


def default_parameters(entry: FlowEntry, config_file: str | None = None) -> dict:
    """{"config": ...} as JSON: the config file's values, or the config class's defaults."""
    cls = load_object(entry.config)
    config = cls.from_file(config_file) if config_file else cls()
    return {"config": config.model_dump(mode="json")}


def deployments(names=None, config_files: dict[str, str] | None = None, schedules_active: bool = False,
                tags=("pairsmith",)) -> list:
    """RunnerDeployments for the named flows (default: all), ready for prefect.serve."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron
    out = []
    for name in names or FLOWS:
        if name not in FLOWS:
            raise ValueError(f"unknown flow {name!r}; known: {sorted(FLOWS)}")
        entry = FLOWS[name]
        flow = load_object(f"{entry.module}:{entry.attr}")
        out.append(flow.to_deployment(
            name=name, description=entry.description, tags=list(tags),
            parameters=default_parameters(entry, (config_files or {}).get(name)),
            schedules=[Cron(entry.cron, timezone="UTC", active=schedules_active)],
            enforce_parameter_schema=True,
            # "flows.build_pairs.build_pairs": the flow object is made lazily by the module's __getattr__, so a
            # file-path entrypoint would name the factory's local function, which no runner can import
            entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="flows: " + ", ".join(f"{n} (cron '{e.cron}' UTC)" for n, e in FLOWS.items()))
    p.add_argument("--only", action="append", choices=sorted(FLOWS), help="serve only this flow (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="FLOW=FILE",
                   help="default parameters of a deployment from a config file, e.g. build-pairs=configs/x.yaml")
    p.add_argument("--schedules-active", action="store_true", help="create the schedules active, not paused")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once in this process")
    args = p.parse_args(argv)
    config_files = {}
    for item in args.config:
        name, sep, path = item.partition("=")
        if not sep or name not in FLOWS:
            p.error(f"--config takes FLOW=FILE with FLOW one of {sorted(FLOWS)}, got {item!r}")
        config_files[name] = path
    from flows.cli import prefect_env
    prefect_env()
    from prefect import serve
    serve(*deployments(args.only, config_files, args.schedules_active), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
