"""User code by import path: ``"pkg.module:callable"`` names a model or data factory, a method class.

The module is imported where the object is needed (the driver checks it before a sweep starts,
every trial imports it again on its own node), so a path that does not import is one ConfigError
naming the field, not a traceback from a worker.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raysparse.errors import ConfigError


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
                          f"it is searched for in: {', '.join(_searched())}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError(field, f"module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    return found


def add_import_dirs(directories: Iterable[str | Path]) -> None:
    """Put directories first on ``sys.path`` (once each): a sweep file's own directory and the
    working directory it was started from, so a trial on any node imports the same modules."""
    for directory in reversed([str(Path(d).resolve()) for d in directories]):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def _searched() -> list[str]:
    return [p or "." for p in sys.path[:4]] + (["..."] if len(sys.path) > 4 else [])
