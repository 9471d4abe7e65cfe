"""raysparse: search sparse-training configurations with Ray Tune + Optuna, tracked in MLflow.

The curated public API; everything else is internal.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from raysparse.config import Config, load_config
from raysparse.errors import ConfigError
from raysparse.robustness.potential import prune_potential
from raysparse.sparsity.distributions import get_distribution
from raysparse.sparsity.masks import (
    MaskSet,
    masks_hash,
    pack_masks,
    prunable_weights,
    resolve_dense_layers,
    unpack_masks,
)
from raysparse.sparsity.schedules import gmp_sparsity
from raysparse.structured import channel_hessian_traces
from raysparse.train.loop import EpochContext, TrainingDiverged, fit

__all__ = [
    "channel_hessian_traces",
    "Config", "ConfigError", "EpochContext", "MaskSet", "TrainingDiverged", "fit", "gmp_sparsity",
    "layer_densities", "load_config", "masks_hash", "pack_masks", "prune_potential", "resume_sweep", "sweep", "train",
    "unpack_masks",
]


def sweep(space: str | Path | dict, **overrides):
    """Run a sweep (a sweep file path or dict) with Ray Tune + Optuna, every trial in MLflow.

    ``overrides`` replace top-level sweep keys (``num_samples=4``, ``tracking_uri=...``,
    ``name=...``) or pass ``address=`` (an existing Ray cluster) and ``home=`` (where the
    embedded MLflow store and Ray results live). Returns a ``SweepResult`` with ``.best()``,
    ``.pareto()``, ``.to_dataframe()``, ``.tracking_uri``, ``.experiment_name``,
    ``.parent_run_id``.
    """
    from raysparse.search import run_sweep  # Ray and Optuna load only when a sweep runs

    return run_sweep(space, **overrides)


def resume_sweep(name: str, **options):
    """Continue sweep ``name`` after its driver stopped: finished trials are kept, the others go
    on from their last checkpoints in the same MLflow runs. ``options``: ``address=``, ``home=``,
    ``storage_path=`` (if the sweep set one), ``verbose=``."""
    from raysparse.search import resume_sweep as resume

    return resume(name, **options)


def train(config: Config | dict | str | Path, *, model: nn.Module | None = None, report=None) -> dict:
    """Train one sparse network in this process; returns the final metrics.

    ``config`` is a dict, a YAML path or a Config; ``model`` replaces the config's model with
    any nn.Module of yours.
    """
    return fit(config, report, model=model)


def layer_densities(
    model: nn.Module, density: float, distribution: str = "erk", dense_layers: Iterable[str] = ()
) -> dict[str, float]:
    """Per-layer densities that ``distribution`` gives ``model``'s weights that do a matmul (Conv,
    Linear, attention projections) at a global ``density`` (layers in ``dense_layers`` kept at 1.0)."""
    if not 0.0 <= density <= 1.0:
        raise ConfigError("density", f"got {density!r}; allowed: [0, 1]")
    weights = prunable_weights(model)
    dense = resolve_dense_layers(list(weights), dense_layers, field="dense_layers")
    return get_distribution(distribution, field="distribution")(weights, density, dense_layers=dense)
