"""Search domains of a sweep file: ``{uniform: [a, b]}``, ``{loguniform: [a, b]}``,
``{int: [a, b]}``, ``{choice: [...]}``, each with an optional ``when: {key: value(s)}`` so that
a key is only sampled where it matters (``regrowth_ratio`` only for granet/rigl/set). Sampling is
define-by-run on an Optuna trial, which is what makes conditional spaces natural for TPE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from raysparse.errors import ConfigError

KINDS = ("uniform", "loguniform", "int", "choice")
_PRIMITIVE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Domain:
    kind: str
    values: tuple
    when: dict[str, tuple] = field(default_factory=dict)

    def upper(self) -> float:
        numbers = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max(numbers) if numbers else math.nan

    def probe_values(self) -> tuple:
        return self.values  # bounds or every choice: all must give valid configs

    def active(self, sampled: dict[str, Any], base_lookup) -> bool:
        for key, allowed in self.when.items():
            value = sampled[key] if key in sampled else base_lookup(key)
            if value not in allowed:
                return False
        return True

    def categories(self) -> list:
        """A choice's values as Optuna sees them: primitives, or indices for list/dict choices."""
        if all(isinstance(v, _PRIMITIVE) for v in self.values):
            return list(self.values)
        # Optuna's categoricals hold primitives only: sample an index for list/dict choices
        return [str(i) for i in range(len(self.values))]

    def suggest(self, trial, name: str) -> Any:
        """Sample on an Optuna trial; the value returned is what the trial config receives."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, self.categories())
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, low, high, log=self.kind == "loguniform")

    def decode(self, value: Any) -> Any:
        if self.kind == "choice" and not all(isinstance(v, _PRIMITIVE) for v in self.values):
            return self.values[int(value)]
        return value


def parse_domain(spec: Any, field_name: str) -> Domain:
    if not isinstance(spec, dict):
        raise ConfigError(field_name, f"expected a domain like {{uniform: [0.1, 0.5]}}, got {spec!r}")
    when = _when(spec.get("when", {}), f"{field_name}.when")
    kinds = [k for k in spec if k != "when"]
    if len(kinds) != 1 or kinds[0] not in KINDS:
        raise ConfigError(field_name, f"got keys {sorted(spec)}; allowed: one of {', '.join(KINDS)} (plus 'when')")
    kind = kinds[0]
    values = spec[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field_name}.choice", f"got {values!r}; allowed: a non-empty list")
        return Domain(kind, tuple(values), when)
    if not (isinstance(values, list) and len(values) == 2):
        raise ConfigError(f"{field_name}.{kind}", f"got {values!r}; allowed: [low, high]")
    low, high = values
    numeric = (int,) if kind == "int" else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, numeric) for v in values):
        kind_text = "integers" if kind == "int" else "numbers"
        raise ConfigError(f"{field_name}.{kind}", f"got {values!r}; allowed: two {kind_text} [low, high]")
    ordered = low <= high if kind == "int" else low < high
    if not ordered:
        raise ConfigError(f"{field_name}.{kind}", f"got {values!r}; allowed: low < high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{field_name}.{kind}", f"got {values!r}; allowed: 0 < low < high")
    return Domain(kind, (low, high) if kind == "int" else (float(low), float(high)), when)


def _when(raw: Any, field_name: str) -> dict[str, tuple]:
    if not isinstance(raw, dict):
        raise ConfigError(field_name, f"expected a mapping key -> value or list of values, got {raw!r}")
    return {k: tuple(v) if isinstance(v, list) else (v,) for k, v in raw.items()}
