"""A package's names loaded on first use (PEP 562): ``import raysparse`` and the CLI's quick
commands then load no torch, Ray or MLflow until a name that needs them is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(namespace: dict, homes: dict[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of the module whose globals are ``namespace``: ``name`` is imported from
    the module ``homes[name]`` when first looked up, then kept in ``namespace`` (later lookups skip it)."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        namespace[name] = value
        return value

    return __getattr__
