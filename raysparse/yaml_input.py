"""Every YAML raysparse takes from a user (config and sweep files, ``--set`` values) is read here.

PyYAML shares an aliased node instead of copying it, so ``safe_load`` of a "billion laughs" file
is cheap; the cost comes later, when anything walks the tree (validation, ``json.dumps``, an error
message printing the value): a 725-byte file grew to 10 GB that way. So the composed document is
measured as if every alias were written out, and refused past a bound that no hand-written
config comes near, before anything else sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from raysparse.errors import ConfigError

# what aliases may add to a document once expanded: far above any config or sweep written by hand
MAX_ALIAS_VALUES = 10_000
MAX_ALIAS_CHARACTERS = 1_000_000


class AliasBomb(ValueError):
    """A document whose aliases expand it past the bounds (or into itself)."""


class _BoundedLoader(yaml.SafeLoader):
    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Count nodes and scalar characters as if every alias were a copy: a shared node counts once
    per use but is measured once, so measuring a bomb is as cheap as loading it."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    written = [0, 0]  # what the document holds without expanding its aliases: values, characters

    def size(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:  # an anchor used inside itself: an endless value
            raise AliasBomb("an alias refers to a value that contains it")
        open_nodes.add(key)
        if isinstance(node, yaml.ScalarNode):
            total = (1, len(node.value))
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            counts = [size(child) for child in children]
            total = (1 + sum(n for n, _ in counts), sum(c for _, c in counts))
        open_nodes.discard(key)
        written[0] += 1
        written[1] += len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        sizes[key] = total
        return total

    values, characters = size(root)
    if values - written[0] > MAX_ALIAS_VALUES or characters - written[1] > MAX_ALIAS_CHARACTERS:
        raise AliasBomb(f"its aliases expand it past {MAX_ALIAS_VALUES} values or {MAX_ALIAS_CHARACTERS} characters")


def load_yaml_text(text: str, field_name: str, where: str) -> Any:
    """``yaml.safe_load`` with aliases bounded; any problem is one ``ConfigError`` on ``field_name``
    saying ``where`` (a file, a --set value) it is."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except AliasBomb as err:
        raise ConfigError(field_name, f"{where}: {err}; allowed: aliases that add at most that much "
                          "(write the values out instead)") from None
    except yaml.YAMLError as err:
        raise ConfigError(field_name, f"invalid YAML in {where}: {_one_line(err)}") from None
    except RecursionError:  # PyYAML composes recursively: thousands of nested brackets
        raise ConfigError(field_name, f"invalid YAML in {where}: nested too deeply") from None


def read_yaml_file(path: Path, field_name: str) -> tuple[Any, str]:
    """The parsed document and its text, from a UTF-8 file."""
    shown = repr(str(path))
    if path.is_dir():
        raise ConfigError(field_name, f"{shown} is a directory; allowed: a YAML file")
    if not path.is_file():
        raise ConfigError(field_name, f"file not found: {shown}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte order mark, as some editors write, is fine
    except UnicodeDecodeError as err:
        raise ConfigError(field_name, f"{shown} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                          f"{err.start}); allowed: a YAML file in UTF-8") from None
    return load_yaml_text(text, field_name, shown), text


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's problem and where it is, without its multi-line excerpt of the file."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context + ': ' if context else ''}{problem}{where}"
