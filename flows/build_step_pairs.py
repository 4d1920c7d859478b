"""build_step_pairs: prompts -> MCTS trees over reasoning steps -> step-level chosen/rejected pairs (Prefect flow).

    python -m flows.build_step_pairs --no-prefect --prompts.limit 2          # the embedded CPU default
    python -m flows.build_step_pairs --config configs/step_pairs.yaml --mcts.iterations 8
    python -m flows.build_step_pairs --help

Thin, like flows/build_pairs.py: every step is a function of pipelines.step_build; batches are Prefect tasks;
Prefect is imported only when the flow runs, and the CLI flags are generated from StepPairsConfig.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import lru_cache

from flows.build_pairs import _fields, _is_str_field
from pipelines.config import apply_overrides
from pipelines.step_config import StepPairsConfig


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from pipelines import step_build

    # resume is step_build's content-addressed shards, as in build_pairs
    @task(name="search-batch", cache_policy=NO_CACHE, task_run_name="batch-{batch.index}")
    def batch_task(run: step_build.Run, batch: step_build.Batch) -> step_build.BatchResult:
        return step_build.process_batch(run, batch, log=get_run_logger().info)

    @flow(name="build-step-pairs", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
    def build_step_pairs(config: StepPairsConfig = StepPairsConfig()) -> dict:
        run = step_build.prepare(config)
        get_run_logger().info(f"run {run.config.run_id}: {len(run.batches)} batches -> {run.run_dir}")
        futures = [batch_task.submit(run, b) for b in run.batches]
        return step_build.finalize(run, [f.result() for f in futures])

    return build_step_pairs


def __getattr__(name: str):
    if name == "build_step_pairs":
        return _make_flow()
    raise AttributeError(name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.build_step_pairs",
        description="Build step-level chosen/rejected pairs (MCTS-DPO trees, Step-DPO first-error correction).",
        epilog="Any config field can be overridden as --section.field VALUE (YAML syntax for lists/dicts).")
    p.add_argument("--config", help="YAML or JSON file with a StepPairsConfig (see configs/step_pairs.yaml)")
    p.add_argument("--no-prefect", action="store_true", help="run the same stages in a plain loop, without Prefect")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    group = p.add_argument_group("config fields")
    for dotted, field in _fields(StepPairsConfig):
        default = field.default if field.default_factory is None else "(see --print-config)"
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", metavar="VALUE",
                           help=f"{field.description or ''} [default: {default!r}]".strip().replace("%", "%%"))
    return p


def resolve_config(args: argparse.Namespace) -> StepPairsConfig:
    data = StepPairsConfig.from_file(args.config).model_dump(exclude_unset=True) if args.config else {}
    str_fields = {d for d, f in _fields(StepPairsConfig) if _is_str_field(f.annotation)}
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    import yaml
    parsed = {k: (v if k in str_fields else yaml.safe_load(v)) for k, v in overrides.items()}
    return StepPairsConfig.model_validate(apply_overrides(data, parsed))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pydantic import ValidationError
    try:
        config = resolve_config(args)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        print(f"error: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.model_dump_json(indent=2))
        return 0
    if args.no_prefect:
        from pipelines.step_build import run_local
        manifest = run_local(config)
    else:
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        manifest = _make_flow()(config=config)
    from pipelines.step_build import summary_text
    print(summary_text(manifest))
    return 0


if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
