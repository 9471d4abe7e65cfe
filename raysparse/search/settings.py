"""Sweep settings that are not the search space: resources per trial and early stopping."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from raysparse.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Resources:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass(frozen=True)
class EarlyStopping:
    """ASHA on the first objective; ``grace_period`` None = just after the pruning schedule ends."""

    enabled: bool = True
    grace_period: int | None = None
    reduction_factor: int = 2


def parse_early_stopping(raw: Any) -> EarlyStopping:
    if raw is False:
        return EarlyStopping(enabled=False)
    if not isinstance(raw, dict):
        raise ConfigError("early_stopping", f"expected a mapping or false, got {raw!r}")
    allowed = ("enabled", "grace_period", "reduction_factor")
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"early_stopping.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("early_stopping.enabled", f"expected true or false, got {enabled!r}")
    grace = raw.get("grace_period")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 1):
        raise ConfigError("early_stopping.grace_period", f"got {grace!r}; allowed: an integer >= 1 (epochs) or null")
    factor = raw.get("reduction_factor", 2)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise ConfigError("early_stopping.reduction_factor", f"got {factor!r}; allowed: an integer >= 2")
    return EarlyStopping(enabled=enabled, grace_period=grace, reduction_factor=factor)


def parse_resources(raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise ConfigError("resources", f"expected a mapping, got {raw!r}")
    allowed = ("workers", "cpus_per_worker", "gpus_per_worker")
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"resources.{key}", f"unknown key; allowed: {', '.join(allowed)}{did_you_mean(key, allowed)}"
            )
    workers = parse_int(raw, "workers", 1, minimum=1, prefix="resources.")
    cpus, gpus = raw.get("cpus_per_worker", 1.0), raw.get("gpus_per_worker", 0.0)
    for key, value, low in (("cpus_per_worker", cpus, 0.0), ("gpus_per_worker", gpus, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or not math.isfinite(value):
            raise ConfigError(f"resources.{key}", f"got {value!r}; allowed: a number >= {low:g}")
    if cpus <= 0:
        raise ConfigError("resources.cpus_per_worker", f"got {cpus!r}; allowed: a number > 0")
    return Resources(workers=workers, cpus_per_worker=float(cpus), gpus_per_worker=float(gpus))


def check_local_resources(resources: Resources) -> None:
    """On a local Ray runtime, a trial that asks for more than this machine has never starts."""
    cpus = os.cpu_count() or 1
    if resources.workers * resources.cpus_per_worker > cpus:
        raise ConfigError(
            "resources",
            f"a trial needs {resources.workers} x {resources.cpus_per_worker:g} CPUs; this machine has {cpus}",
        )
    if resources.gpus_per_worker > 0:
        import torch

        if resources.gpus_per_worker * resources.workers > torch.cuda.device_count():
            raise ConfigError(
                "resources.gpus_per_worker",
                f"got {resources.gpus_per_worker:g} per worker; this machine has {torch.cuda.device_count()} GPUs "
                "(use --address to run on a cluster with GPUs)",
            )


def parse_int(raw: dict, key: str, default: int, *, minimum: int, prefix: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}{key}", f"got {value!r}; allowed: an integer >= {minimum}")
    return value
