"""A sweep's name, values and storage path become directories, files, MLflow names and a JSON
resume state: what would fail there, after Ray and MLflow started, is refused here first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raysparse.errors import ConfigError, shown

_PLAIN = (str, int, float, bool, type(None))


def check_plain_data(value: Any, path: str) -> None:
    """The sweep goes into its resume state as JSON: a value YAML gives as another type (a date,
    ``!!binary``, ``!!set``) where no check looks at its type (a ``when`` value, a factory's
    option) would otherwise fail there, after Ray and MLflow started."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                raise ConfigError(where, f"got key {shown(key)}; allowed: keys that are text")
            check_plain_data(item, where)
    elif isinstance(value, (list, tuple)):  # a tuple from Python is a list in JSON
        for index, item in enumerate(value):
            check_plain_data(item, f"{path}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise ConfigError(path, f"got {shown(value)} (a {type(value).__name__}); allowed: text, numbers, true/false, "
                          "null, lists and mappings (a sweep's state is JSON)")


MAX_NAME_LENGTH = 100  # a name becomes directory, file and run names, with suffixes, within 255 bytes
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(field_name: str, name: Any) -> str:
    """A sweep or experiment name: ASCII letters, digits, '-' and '_', at most 100 of them. It
    names directories (Ray results, reports), an MLflow experiment and runs, so no '/', '..',
    NUL, newline or non-ASCII letter (``str.isalnum`` takes 'é' and '²') gets through."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigError(field_name, f"got {shown(name)}; allowed: 1 to {MAX_NAME_LENGTH} ASCII letters, digits, "
                          "'-' and '_'")
    return name


def check_storage_path(value: str | None) -> str | None:
    """A local storage path must be a directory or creatable as one (a file in the way would be
    found after Ray and MLflow started); a URI (s3://, gs://) is Tune's to check."""
    if value is not None and "://" not in value:
        path = Path(value).expanduser().resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError("storage_path", f"got {shown(value)}; {str(existing)!r} is a file, not a directory")
    return value
