"""User code by import path: ``"pkg.module:callable"`` names a model or data factory, a method class.

The module is imported where the object is needed (the driver checks it before a sweep starts,
every trial imports it again on its own node), so a path that does not import is one ConfigError
naming the field, not a traceback from a worker.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raysparse.errors import ConfigError

_ADDED: list[str] = []  # the directories add_import_dirs made importable, in order: what errors list


def is_import_path(value: object) -> bool:
    """``"pkg.module:name"``: a module, a colon, an attribute path."""
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    module, name = value.split(":")
    return all(part.isidentifier() for part in [*module.split("."), *name.split(".")])


def import_object(path: str, field: str) -> Any:
    """The object ``path`` names (``"pkg.module:name"``, attributes dotted after the colon)."""
    if not is_import_path(path):
        raise ConfigError(field, f"got {path!r}; allowed: an import path 'package.module:name'")
    module_name, attribute = path.split(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as err:  # an import runs the user's module: any error it raises is theirs
        raise ConfigError(field, f"cannot import {module_name!r} ({type(err).__name__}: {err}); "
                          f"it is searched for in: {_searched()}") from None
    module = found
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError(field, f"module {module_name!r} has no {attribute!r}{_shadowed(module)}")
        found = getattr(found, part)
    return found


def add_import_dirs(directories: Iterable[str | Path]) -> None:
    """Make directories importable (once each): a sweep file's own directory and the working
    directory it was started from, so a trial on any node imports the same modules.

    They go after the standard library and site-packages, never before: a stray ``netrc.py`` or
    ``json.py`` beside a sweep file must not replace the module that Python, requests or MLflow
    imports by that name. One already ahead of the standard library is moved behind it (Ray puts
    the driver's working directory first in every worker process), unless PYTHONPATH names it:
    that order is the user's own.
    """
    chosen = {os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    for directory in dict.fromkeys(os.path.realpath(d) for d in directories):
        ahead = [i for i, p in enumerate(sys.path[:_stdlib_index()]) if p and os.path.realpath(p) == directory]
        if directory not in chosen:
            for i in reversed(ahead):
                del sys.path[i]
        if not any(p and os.path.realpath(p) == directory for p in sys.path):
            sys.path.append(directory)
        if directory not in _ADDED:
            _ADDED.append(directory)


def _stdlib_index() -> int:
    """Where the standard library starts on ``sys.path`` (its end when it is not found there)."""
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    for i, p in enumerate(sys.path):
        if p and os.path.realpath(p) == stdlib:
            return i
    return len(sys.path)


def _searched() -> str:
    if not _ADDED:
        return ", ".join([p or "." for p in sys.path[:4]] + (["..."] if len(sys.path) > 4 else []))
    return f"{', '.join(_ADDED)} (after the standard library and installed packages)"


def _shadowed(module: object) -> str:
    """For a module found outside the directories added: where it came from (an installed
    module of the same name comes before the user's)."""
    file = getattr(module, "__file__", None)
    if not file or not _ADDED or any(Path(file).resolve().is_relative_to(d) for d in _ADDED):
        return ""
    return (f" (it was imported from {file}: an installed or standard module of that name comes before "
            f"{', '.join(_ADDED)}; rename your module)")
