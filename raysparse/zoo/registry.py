"""The zoo's registries (one ``Registry`` type for every kind, in raysparse/registry.py) and the
checks of a factory's keyword options."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping

from raysparse.errors import ConfigError, did_you_mean
from raysparse.registry import Registry

__all__ = ["Registry", "check_options", "keyword_options"]


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
