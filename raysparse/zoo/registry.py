"""A name -> object registry, shared by models, datasets, methods and distributions."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from raysparse.errors import ConfigError, did_you_mean, unknown_choice

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

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name`` and returns it unchanged."""

        def decorator(entry: T) -> T:
            if name in self._entries:
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


def keyword_options(factory: Callable, skip: Iterable[str] = ()) -> list[str] | None:
    """The option names ``factory`` accepts by keyword, or None when it takes ``**kwargs``."""
    options = []
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            options.append(parameter.name)
    return [name for name in options if name not in set(skip)]


def check_options(options: Mapping[str, object], allowed: Iterable[str], field: str, owner: str):
    """Raise a ConfigError on ``<field>.<option>`` for the first option not in ``allowed``.

    ``owner`` says whose options these are (``model 'mlp'``), so the message reads
    ``model.hiden: unknown option for model 'mlp'; allowed: hidden (did you mean 'hidden'?)``.
    """
    allowed = sorted(allowed)
    for option in options:
        if option not in allowed:
            listing = ", ".join(allowed) if allowed else "none"
            raise ConfigError(
                f"{field}.{option}",
                f"unknown option {option!r} for {owner}; allowed: {listing}"
                f"{did_you_mean(option, allowed)}",
            )
