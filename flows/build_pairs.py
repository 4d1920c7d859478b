"""build_pairs: prompts -> k samples -> scores -> chosen/rejected pairs, as a Prefect flow.

    python -m flows.build_pairs                          # the embedded CPU default
    python -m flows.build_pairs --config configs/vllm-gpu.yaml --sampler.k 8
    python -m flows.build_pairs --help

The flow is thin: every step is a function of pipelines.build; batches are Prefect tasks. Prefect is imported
only when the flow runs (PEP 562 module __getattr__), so `--help` and config errors answer in well under 2 s;
`from flows.build_pairs import build_pairs` and the entrypoint `flows/build_pairs.py:build_pairs` still give
the flow object to deployments.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from functools import lru_cache

from pipelines.config import BuildConfig, apply_overrides


@lru_cache(maxsize=1)
def _make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from pipelines import build, report

    # Caching is done by pipelines.build's content-addressed shards (inputs + config + code), which also
    # survive kill -9 and work the same without Prefect; Prefect's own result cache would store a second copy.
    @task(name="sample-and-score-batch", cache_policy=NO_CACHE, task_run_name="batch-{batch.index}")
    def batch_task(run: build.Run, batch: build.Batch) -> build.BatchResult:
        return build.process_batch(run, batch, log=get_run_logger().info)

    # One worker: a batch already saturates the cores (CPU) or the GPU; Ray scale-out swaps the task runner.
    @flow(name="build-pairs", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
    def build_pairs(config: BuildConfig = BuildConfig()) -> dict:
        logger = get_run_logger()
        run = build.prepare(config)
        logger.info(f"run {run.config.run_id}: {len(run.batches)} batches -> {run.run_dir}")
        futures = [batch_task.submit(run, b) for b in run.batches]
        manifest = build.finalize(run, [f.result() for f in futures])
        create_markdown_artifact(report.summary_markdown(manifest), key="build-pairs-summary",
                                 description=f"pairsmith run {manifest['run_id']}")
        return manifest

    return build_pairs


def __getattr__(name: str):
    if name == "build_pairs":
        return _make_flow()
    raise AttributeError(name)


def _is_str_field(annotation) -> bool:
    return annotation is str or (typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType"))
                                 and str in typing.get_args(annotation))


def _fields(model, prefix=""):
    """(dotted name, field) for every leaf field of the config, nested sections flattened."""
    from pydantic import BaseModel
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.build_pairs",
        description="Build chosen/rejected preference pairs (TRL-ready Parquet) from prompts.",
        epilog="Any config field can be overridden as --section.field VALUE (YAML syntax for lists/dicts).")
    p.add_argument("--config", help="YAML or JSON file with a BuildConfig (see configs/)")
    p.add_argument("--no-prefect", action="store_true", help="run the same stages in a plain loop, without Prefect")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    group = p.add_argument_group("config fields")
    for dotted, field in _fields(BuildConfig):
        default = field.default if field.default_factory is None else "(see --print-config)"
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", metavar="VALUE",
                           help=f"{field.description or ''} [default: {default}]".strip())
    return p


def resolve_config(args: argparse.Namespace) -> BuildConfig:
    data = BuildConfig.from_file(args.config).model_dump(exclude_unset=True) if args.config else {}
    str_fields = {d for d, f in _fields(BuildConfig) if _is_str_field(f.annotation)}
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    # str fields keep the raw text ("0123" stays a string); others are parsed as YAML scalars/lists/dicts
    import yaml
    parsed = {k: (v if k in str_fields else yaml.safe_load(v)) for k, v in overrides.items()}
    return BuildConfig.model_validate(apply_overrides(data, parsed))


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
        from pipelines.build import run_local
        manifest = run_local(config)
    else:
        # a fresh ephemeral Prefect API needs ~25 s to start on 2 cores; Prefect's default allows 20
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        # telemetry writes race the first flow run on the fresh SQLite database ("database is locked")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        manifest = _make_flow()(config=config)
    from pipelines.report import summary_text
    print(summary_text(manifest))
    return 0


if __name__ == "__main__":  # the guard vLLM's spawned workers need
    sys.exit(main())
