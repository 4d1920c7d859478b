"""The command line every flow shares: flags generated from its pydantic config, `--config FILE`, `--no-prefect`.

    python -m flows.<name> [--config FILE] [--section.field VALUE ...] [--no-prefect] [--print-config]

A flow module calls `run_cli(...)` with its config class, its local runner, its Prefect flow factory and its
summary function. Nothing heavy is imported here: `--help` and config errors answer in well under 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from typing import Callable

from pipelines.core.config import apply_overrides


def _is_str_field(annotation) -> bool:
    return annotation is str or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                 and str in typing.get_args(annotation))


def config_fields(model, prefix=""):
    """(dotted name, field) for every leaf field of a config, nested sections flattened."""
    from pydantic import BaseModel
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from config_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def parser(config_cls, prog: str, description: str, local: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,  # a prefix of a flag is a typo, not that flag
        epilog="Any config field can be overridden as --section.field VALUE (YAML syntax for lists/dicts).")
    p.add_argument("--config", help=f"YAML or JSON file with a {config_cls.__name__} (see configs/)")
    if local:
        p.add_argument("--no-prefect", action="store_true", help="run the same stages in a plain loop, without Prefect")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    group = p.add_argument_group("config fields")
    for dotted, field in config_fields(config_cls):
        default = field.default if field.default_factory is None else "(see --print-config)"
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", metavar="VALUE",
                           help=f"{field.description or ''} [default: {default!r}]".strip().replace("%", "%%"))
    return p


def resolve_config(config_cls, args: argparse.Namespace):
    """--config FILE, then --section.field overrides; str fields keep the raw text ("0123" stays a string),
    other values are parsed as YAML scalars/lists/dicts."""
    import yaml
    data = config_cls.from_file(args.config).model_dump(exclude_unset=True) if args.config else {}
    str_fields = {d for d, f in config_fields(config_cls) if _is_str_field(f.annotation)}
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    parsed = {k: (v if k in str_fields else yaml.safe_load(v)) for k, v in overrides.items()}
    return config_cls.model_validate(apply_overrides(data, parsed))


def prefect_env() -> None:
    """Settings for the temporary local Prefect API a flow starts when no PREFECT_API_URL is set."""
    # a fresh ephemeral Prefect API needs ~25 s to start on 2 cores; Prefect's default allows 20
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # telemetry writes race the first flow run on the fresh SQLite database ("database is locked")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_cli(argv: list[str] | None, *, config_cls, prog: str, description: str,
            make_flow: Callable[[], Callable], summary: Callable[[dict], str],
            run_local: Callable | None = None) -> int:
    """Parse, validate (exit 2 with the pydantic message on bad config), run with or without Prefect, print."""
    args = parser(config_cls, prog, description, local=run_local is not None).parse_args(argv)
    from pydantic import ValidationError
    try:
        config = resolve_config(config_cls, args)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        print(f"error: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.model_dump_json(indent=2))
        return 0
    from pipelines.core import io
    try:
        if getattr(config, "output_dir", None):  # a read-only or full output dir: one line now, not a traceback later
            io.check_writable(config.output_dir)
        if run_local is not None and args.no_prefect:
            result = run_local(config)
        else:
            prefect_env()
            result = make_flow()(config=config)
    except io.OutputError as e:
        print(f"error: {e.strerror}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0
