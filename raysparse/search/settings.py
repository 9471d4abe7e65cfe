"""Sweep settings that are not the search space: resources per trial and early stopping."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

from raysparse.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Resources:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


SCHEDULERS = ("asha", "pbt")
# what PBT perturbs when the sweep does not say: the keys of a sparse schedule that may change mid-run
PBT_DEFAULT_MUTATE = ("sparsity.regrowth_ratio", "optimizer.lr", "sparsity.update_frequency")
_COMMON_KEYS, _ASHA_KEYS, _PBT_KEYS = ("enabled", "scheduler"), ("grace_period", "reduction_factor"), (
    "interval", "mutate", "quantile_fraction")


@dataclass(frozen=True)
class EarlyStopping:
    """ASHA on the first objective (``grace_period`` None = just after the pruning schedule ends),
    or PBT: every ``interval`` epochs a lagging trial copies a better one's checkpoint and
    perturbs the ``mutate`` keys (None = the defaults the space has, resolved by load_sweep)."""

    enabled: bool = True
    scheduler: str = "asha"
    grace_period: int | None = None
    reduction_factor: int = 2
    interval: int = 4
    mutate: tuple[str, ...] | None = None
    quantile_fraction: float = 0.25  # PBT: the bottom fraction copies the top fraction

    @property
    def pbt(self) -> bool:
        return self.enabled and self.scheduler == "pbt"


def parse_early_stopping(raw: Any) -> EarlyStopping:
    if raw is False:
        return EarlyStopping(enabled=False)
    if not isinstance(raw, dict):
        raise ConfigError("early_stopping", f"expected a mapping or false, got {raw!r}")
    scheduler = raw.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise ConfigError("early_stopping.scheduler", f"got {scheduler!r}; allowed: {', '.join(SCHEDULERS)}"
                          f"{did_you_mean(str(scheduler), SCHEDULERS)}")
    own = _ASHA_KEYS if scheduler == "asha" else _PBT_KEYS
    other = _PBT_KEYS if scheduler == "asha" else _ASHA_KEYS
    allowed = _COMMON_KEYS + own
    for key in raw:
        if key in other:
            raise ConfigError(f"early_stopping.{key}", f"is a setting of scheduler: {scheduler_of(key)}; with "
                              f"scheduler: {scheduler} allowed: {', '.join(allowed)}")
        if key not in allowed:
            raise ConfigError(f"early_stopping.{key}", f"unknown key; allowed: {', '.join(allowed)}"
                              f"{did_you_mean(str(key), _COMMON_KEYS + _ASHA_KEYS + _PBT_KEYS)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("early_stopping.enabled", f"expected true or false, got {enabled!r}")
    if scheduler == "pbt":
        return _parse_pbt(raw, enabled)
    grace = raw.get("grace_period")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 1):
        raise ConfigError("early_stopping.grace_period", f"got {grace!r}; allowed: an integer >= 1 (epochs) or null")
    factor = raw.get("reduction_factor", 2)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise ConfigError("early_stopping.reduction_factor", f"got {factor!r}; allowed: an integer >= 2")
    return EarlyStopping(enabled=enabled, grace_period=grace, reduction_factor=factor)


def scheduler_of(key: str) -> str:
    return "pbt" if key in _PBT_KEYS else "asha"


def _parse_pbt(raw: dict, enabled: bool) -> EarlyStopping:
    interval = parse_int(raw, "interval", 4, minimum=1, prefix="early_stopping.")
    mutate = raw.get("mutate")
    if mutate is not None and (not isinstance(mutate, list) or not mutate
                               or not all(isinstance(k, str) for k in mutate) or len(set(mutate)) != len(mutate)):
        raise ConfigError("early_stopping.mutate", f"got {mutate!r}; allowed: a non-empty list of distinct space "
                          "keys, e.g. [sparsity.regrowth_ratio, optimizer.lr]")
    fraction = raw.get("quantile_fraction", 0.25)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 0.5:
        raise ConfigError("early_stopping.quantile_fraction", f"got {fraction!r}; allowed: a number in (0, 0.5]")
    return EarlyStopping(enabled=enabled, scheduler="pbt", interval=interval,
                         mutate=tuple(mutate) if mutate is not None else None, quantile_fraction=float(fraction))


NUMERIC_KINDS = ("uniform", "loguniform", "int")


def checked_pbt(sweep) -> EarlyStopping:
    """PBT over a Sweep (checked by load_sweep): what it cannot be combined with, and the keys it mutates (resolved)."""
    settings = sweep.early_stopping
    if len(sweep.objectives) > 1:
        raise ConfigError("early_stopping.scheduler", f"got 'pbt' with {len(sweep.objectives)} objectives "
                          f"({', '.join(m for m, _ in sweep.objectives)}); PBT ranks trials by one metric: allowed "
                          "with one objective, or scheduler: asha")
    if sweep.sampler not in ("auto", "random"):
        raise ConfigError("sampler", f"got {sweep.sampler!r} with early_stopping.scheduler: pbt; Ray Tune refuses "
                          "a search algorithm with PBT, which samples its first population from the space "
                          "itself; allowed: auto, random")
    if sweep.layer_sparsity is not None:
        raise ConfigError("layer_sparsity", "is sampled by Optuna, which PBT cannot use; remove it or use "
                          "early_stopping.scheduler: asha")
    if sweep.objects.loop is not None:
        raise ConfigError("early_stopping.scheduler", "got 'pbt' with a loop of yours; PBT copies the checkpoints "
                          "of raysparse's own loop (weights, optimizer and masks): allowed with the built-in loop")
    if sweep.resources.workers != 1:
        raise ConfigError("early_stopping.scheduler", f"got 'pbt' with resources.workers {sweep.resources.workers}; "
                          "allowed with 1 worker per trial")
    epochs = sweep.base.get("epochs", 30)
    if settings.interval >= epochs:
        raise ConfigError("early_stopping.interval", f"got {settings.interval}; allowed: an integer from 1 to "
                          f"{epochs - 1} (epochs - 1: the last epoch is never a perturbation)")
    if settings.mutate is None:
        mutate = tuple(k for k in PBT_DEFAULT_MUTATE if k in sweep.space and sweep.space[k].kind in NUMERIC_KINDS)
        if not mutate:
            raise ConfigError("early_stopping.mutate", f"not given, and the space has none of its defaults "
                              f"({', '.join(PBT_DEFAULT_MUTATE)}) as a number domain; name the space keys to mutate")
        return replace(settings, mutate=mutate)
    for key in settings.mutate:
        if key not in sweep.space:
            keys = list(sweep.space)
            raise ConfigError("early_stopping.mutate", f"got {key!r}, not a key of the space; allowed: "
                              f"{', '.join(keys) or 'none (the space is empty)'}{did_you_mean(key, keys)}")
    return settings


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


# a DDP trial's own process only hosts the TorchTrainer driver: a sliver of a CPU, beside its workers'
DDP_HOST_CPUS = 0.01


def trial_resources(resources: Resources) -> dict[str, float]:
    """What Tune reserves for a trial's own process: a 1-worker trial trains in it; a DDP trial's
    workers are reserved by Ray Train on top (``workers x cpus_per_worker``)."""
    if resources.workers == 1:
        return {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker}
    return {"cpu": DDP_HOST_CPUS}


def trial_cpus(resources: Resources) -> float:
    """Every CPU one trial holds at once: its own process's and its DDP workers'."""
    if resources.workers == 1:
        return resources.cpus_per_worker
    return DDP_HOST_CPUS + resources.workers * resources.cpus_per_worker


def concurrent_trials(sweep, cpus: float | None) -> int:
    """At most ``max_concurrent`` trials at once, and on a machine of ``cpus`` CPUs (a local runtime)
    no more DDP trials than their workers fit: Tune reserves a DDP trial's own process only, and the
    workers of one started beside them would wait for the others' CPUs past Ray Train's bound
    (search/worker_group.py). On a cluster (None) an autoscaler may add nodes: no cap."""
    if cpus is None or sweep.resources.workers == 1:
        return sweep.max_concurrent
    return max(1, min(sweep.max_concurrent, int(cpus // trial_cpus(sweep.resources))))


def local_cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", 1.0)


def check_local_resources(resources: Resources) -> None:
    """On a local Ray runtime, a trial that asks for more than this machine has never starts (Ray
    waits for the CPUs forever, silently): refused before anything starts."""
    cpus = os.cpu_count() or 1
    needed = trial_cpus(resources)
    if needed > cpus:
        host = f" + {DDP_HOST_CPUS:g} for the trial's own process" if resources.workers > 1 else ""
        raise ConfigError(
            "resources",
            f"a trial needs {resources.workers} x {resources.cpus_per_worker:g} CPUs{host} = {needed:g}; this "
            f"machine has {cpus} (lower cpus_per_worker, e.g. {_fitting(resources, cpus):g}, or use --address "
            "to run on a cluster)",
        )
    if resources.gpus_per_worker > 0:
        import torch

        if resources.gpus_per_worker * resources.workers > torch.cuda.device_count():
            raise ConfigError(
                "resources.gpus_per_worker",
                f"got {resources.gpus_per_worker:g} per worker; this machine has {torch.cuda.device_count()} GPUs "
                "(use --address to run on a cluster with GPUs)",
            )


def _fitting(resources: Resources, cpus: int) -> float:
    """The largest cpus_per_worker, in quarters, with which the trial fits in ``cpus``."""
    spare = cpus - (DDP_HOST_CPUS if resources.workers > 1 else 0.0)
    return max(0.25, math.floor(spare / resources.workers / 0.25) * 0.25)


def parse_int(raw: dict, key: str, default: int, *, minimum: int, prefix: str = "") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}{key}", f"got {value!r}; allowed: an integer >= {minimum}")
    return value
