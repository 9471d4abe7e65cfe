"""The one error type for bad input: it names the field, the bad value and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_FIELD_LENGTH, MAX_MESSAGE_LENGTH, MAX_VALUE_LENGTH = 200, 1000, 120


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters: its start and its end (where "allowed: ..." is), the
    middle replaced by how much was left out. A message never prints megabytes of a bad value."""
    if len(text) <= limit:
        return text
    keep = limit - 40
    head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3:]
    return f"{head}...[{len(text) - len(head) - len(tail)} characters cut]...{tail}"


def shown(value: object) -> str:
    """A bad value as an error message shows it: its repr, cut to a readable length."""
    return cut(repr(value), MAX_VALUE_LENGTH)


class ConfigError(ValueError):
    """Bad user input, found before anything starts.

    ``field`` is the dotted config path (``sparsity.method``), so a CLI or a sweep validator can
    show exactly where the problem is. Both are cut to a bounded length and kept on one line
    (the CLI's promise), whatever value or other error's text went into them.
    """

    def __init__(self, field: str, message: str):
        field = cut(" ".join(str(field).splitlines()), MAX_FIELD_LENGTH)
        message = cut(" ".join(str(message).splitlines()), MAX_MESSAGE_LENGTH)
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self):
        # rebuilt from (field, message), not from args: Ray copies and pickles a trial's exception
        # to report it, and the default reduce would call ConfigError(full_text) and fail
        return type(self), (self.field, self.message)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf: the run stops with this reason instead of training on garbage."""


class TrackingServerLost(RuntimeError):
    """The sweep's MLflow server stopped answering and could not be restarted: the sweep stopped,
    its runs left open for ``raysparse sweep --resume NAME``."""


class DiskFull(RuntimeError):
    """A disk the sweep writes to filled: the sweep stopped (its one line already printed), its
    state kept whole for ``raysparse sweep --resume NAME`` once there is space."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close choice exists, else ''."""
    match = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_choice(field: str, kind: str, value: object, choices: Iterable[str]) -> ConfigError:
    """``unknown method 'grant'; available: dense, gmp, granet (did you mean 'granet'?)``."""
    choices = sorted(choices)
    return ConfigError(
        field,
        f"unknown {kind} {shown(value)}; available: {', '.join(choices)}{did_you_mean(value, choices)}",
    )


def require(ok: bool, field: str, value: object, allowed: str) -> None:
    """``sparsity.layer_cap: got 1.5; allowed: (0, 1)`` unless ``ok``: the check every config
    block (and every method's options) writes its ranges with."""
    if not ok:
        raise ConfigError(field, f"got {shown(value)}; allowed: {allowed}")


def require_choice(field: str, kind: str, value: object, choices: Iterable[str]) -> None:
    if value not in choices:
        raise unknown_choice(field, kind, value, choices)
