"""A name -> object registry, shared by methods, models, datasets (and whatever else is chosen
by name). It lives outside ``zoo`` and ``methods`` so that both import it without a cycle."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from raysparse.errors import unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under unique names; ``kind`` ("model", "method", ...) is used in errors.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp")
    ... def mlp(input_shape, num_classes): ...
    >>> MODELS.get("mlp", field="model.name") is mlp
    True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` and returns it unchanged
        (``replace``: over an earlier entry of that name, e.g. a user's class defined again)."""

        def decorator(entry: T) -> T:
            if name in self._entries and not replace:
                # Two entries silently shadowing each other would be miserable to debug.
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: object, field: str) -> T:
        """The entry for ``name``; a ConfigError on ``field`` listing the choices otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise unknown_choice(field, self.kind, name, self._entries)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def values(self) -> list[T]:
        return [self._entries[n] for n in self.names()]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
