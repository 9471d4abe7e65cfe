"""Methods registered by name."""

from __future__ import annotations

from raysparse.errors import unknown_choice

METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, field: str = "sparsity.method") -> type:
    if name not in METHODS:
        raise unknown_choice(field, "method", name, METHODS)
    return METHODS[name]
