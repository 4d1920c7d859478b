"""The command line every flow shares: flags generated from its pydantic config, `--config FILE`, `--no-prefect`.

    python -m flows.<name> [--config FILE] [--section.field VALUE ...] [--no-prefect] [--print-config] [--dry-run]

A flow module calls `run_cli(...)` with its config class, its local runner, its Prefect flow factory and its
summary function (and, for the batched builds, its dry run). Nothing heavy is imported here: `--help` and config
errors answer in well under 2 s.

Errors the user can fix (a bad config value, file or flag; a malformed prompts file; a missing optional package:
flows/quiet.py:user_message) end with ONE line on stderr, "error: ...", naming the file and line, the flag, or
the package to install, and exit code 2, with or without Prefect (a Prefect flow run fails with the error; the
CLI catches it around the flow call). Anything else is a bug and keeps its traceback; PAIRSMITH_DEBUG=1 shows
the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from typing import Callable

from pipelines.core.config import apply_overrides
from pipelines.core.errors import UserError


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


_NO_DEFAULT = object()


def section_default(config_cls, dotted: str):
    """A nested field's default as the config sets it in SECTION_DEFAULTS (pipelines/core/config.py:FileConfig),
    the outermost config's first (iterate's build over build_pairs' own); _NO_DEFAULT when none sets it."""
    from pydantic import BaseModel
    parts = dotted.split(".")
    cls = config_cls
    for i, name in enumerate(parts[:-1]):
        node = getattr(cls, "SECTION_DEFAULTS", {}).get(name, _NO_DEFAULT)
        for key in parts[i + 1:]:
            node = node.get(key, _NO_DEFAULT) if isinstance(node, dict) else _NO_DEFAULT
        if node is not _NO_DEFAULT:
            return node
        cls = cls.model_fields[name].annotation
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            break
    return _NO_DEFAULT


def parser(config_cls, prog: str, description: str, local: bool = True,
           dry_run: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,  # a prefix of a flag is a typo, not that flag
        epilog="Any config field can be overridden as --section.field VALUE (YAML syntax for lists/dicts).")
    p.add_argument("--config", help=f"YAML or JSON file with a {config_cls.__name__} (see configs/)")
    if local:
        p.add_argument("--no-prefect", action="store_true", help="run the same stages in a plain loop, without Prefect")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if dry_run:
        p.add_argument("--dry-run", action="store_true",
                       help="load the prompts (and the tokenizer only), print the batch plan, the token bound, the "
                            "judge calls and an estimated time, and exit: no model loaded, nothing written")
    group = p.add_argument_group("config fields")
    for dotted, field in config_fields(config_cls):
        default = section_default(config_cls, dotted)
        if default is _NO_DEFAULT:
            default = field.default if field.default_factory is None else "(see --print-config)"
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", metavar="VALUE",
                           help=f"{field.description or ''} [default: {default!r}]".strip().replace("%", "%%"))
    return p


class FlagError(UserError, ValueError):
    """An override flag whose value is not YAML, or a config that the overrides make invalid: names the flag."""


def resolve_config(config_cls, args: argparse.Namespace):
    """--config FILE, then --section.field overrides; str fields keep the raw text ("0123" stays a string),
    other values are parsed as YAML scalars/lists/dicts. Errors are one line naming the file:line or the flag."""
    import yaml
    from pydantic import ValidationError

    from pipelines.core.config import error_lines
    data = config_cls.from_file(args.config).model_dump(exclude_unset=True) if args.config else {}
    str_fields = {d for d, f in config_fields(config_cls) if _is_str_field(f.annotation)}
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    parsed = {}
    for key, value in overrides.items():
        try:
            parsed[key] = value if key in str_fields else yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise FlagError(f"--{key} {value!r}: not a YAML value ({getattr(e, 'problem', None) or e})") from None
    try:
        return config_cls.model_validate(apply_overrides(data, parsed))
    except ValidationError as e:
        def where(loc: tuple) -> str | None:
            dotted = ".".join(loc)
            flag = next((k for k in overrides if dotted == k or dotted.startswith(k + ".")
                         or k.startswith(dotted + ".")), None)
            if flag is not None:
                return f"--{flag} {overrides[flag]}"
            return f"{args.config}: {dotted}" if args.config else None
        raise FlagError("invalid configuration: " + "; ".join(error_lines(e, where))) from None


def prefect_env() -> None:
    """Settings for the temporary local Prefect API a flow starts when no PREFECT_API_URL is set."""
    # a fresh ephemeral Prefect API needs ~25 s to start on 2 cores; Prefect's default allows 20
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # telemetry writes race the first flow run on the fresh SQLite database ("database is locked")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def fail(message: str) -> int:
    """A user error: one line on stderr, exit code 2."""
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    return 2


def run_cli(argv: list[str] | None, *, config_cls, prog: str, description: str,
            make_flow: Callable[[], Callable], summary: Callable[[dict], str],
            run_local: Callable | None = None, dry_run: Callable | None = None) -> int:
    """Parse, validate, run with or without Prefect (or only plan: --dry-run), print the summary. User errors are
    one line and exit code 2 (flows/quiet.py:user_message)."""
    from flows import quiet
    args = parser(config_cls, prog, description, local=run_local is not None,
                  dry_run=dry_run is not None).parse_args(argv)
    quiet.install()
    try:
        config = resolve_config(config_cls, args)
        if args.print_config:
            print(config.model_dump_json(indent=2))
            return 0
        if dry_run is not None and args.dry_run:
            print(dry_run(config))
            return 0
        if getattr(config, "output_dir", None):  # a read-only or full output dir: one line now, not a traceback later
            from pipelines.core import io
            io.check_writable(config.output_dir)
        if run_local is not None and args.no_prefect:
            result = run_local(config)
        else:
            prefect_env()
            flow = make_flow()
            quiet.install()  # again: importing Prefect configured its loggers
            result = flow(config=config)
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised as it is
        message = quiet.user_message(e)
        if message is None or os.environ.get("PAIRSMITH_DEBUG"):
            raise
        return fail(message)
    print(summary(result))
    return 0
