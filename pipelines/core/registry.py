"""Components chosen by name: a registry maps a name to "module:attr", imported only when used.

Samplers, scorers, selection rules and filters, prompt loaders: each keeps such a table, so choosing one
in a config costs nothing until it runs (heavy backends import torch or vLLM).
"""

from __future__ import annotations

import importlib


def load_object(spec: str):
    """"package.module:attr" -> the attribute, importing the module."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"expected 'module:attr', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def check_known(registry: dict[str, str], name: str, kind: str) -> str:
    """`name` when it is registered; else the error a config validator raises (listing the known names)."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    return name


def lookup(registry: dict[str, str], name: str, kind: str):
    """The registered object for `name`; an unknown name is an error listing the known ones."""
    return load_object(registry[check_known(registry, name, kind)])
