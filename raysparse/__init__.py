"""raysparse: search sparse-training configurations with Ray Tune + Optuna, tracked in MLflow.

The curated public API; everything else is internal.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import raysparse.train  # noqa: F401  (loaded first: the function `train` below then keeps the name)
from raysparse._lazy import lazy_names
from raysparse.errors import ConfigError, TrainingDiverged

if TYPE_CHECKING:
    from torch import nn

    from raysparse.config import Config

# name -> module: loaded on first use, so `import raysparse` and `raysparse --help` load no torch,
# ray, mlflow, optuna, pandas or torch_pruning until a command needs them (Optuna's habit)
_LAZY = {
    "Config": "raysparse.config", "load_config": "raysparse.config",
    "EpochContext": "raysparse.train.loop", "fit": "raysparse.train.loop",
    "MaskSet": "raysparse.sparsity.masks", "masks_hash": "raysparse.sparsity.masks",
    "pack_masks": "raysparse.sparsity.masks", "unpack_masks": "raysparse.sparsity.masks",
    "gmp_sparsity": "raysparse.sparsity.schedules",
    "prune_potential": "raysparse.robustness.potential",
    "channel_hessian_traces": "raysparse.structured",
    "MethodOptions": "raysparse.methods", "SparseMethod": "raysparse.methods", "register_method": "raysparse.methods",
    "Sparsifier": "raysparse.train.sparsifier",
    "Task": "raysparse.tasks", "TaskOptions": "raysparse.tasks",
    "deploy": "raysparse.deployment", "load_deployed": "raysparse.deployment", "save_deployed": "raysparse.deployment",
}

__all__ = [
    "channel_hessian_traces",
    "Config", "ConfigError", "deploy", "EpochContext", "MaskSet", "TrainingDiverged", "fit", "gmp_sparsity",
    "layer_densities", "load_config", "load_deployed", "load_model", "masks_hash", "pack_masks", "prune_potential",
    "resume_sweep", "save_deployed",
    "Sparsifier", "sweep", "train", "unpack_masks",
    "MethodOptions", "SparseMethod", "register_method", "Task", "TaskOptions",
]


__getattr__ = lazy_names(globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def sweep(space: str | Path | dict, *, model=None, data=None, loop=None, task=None, **overrides):
    """Run a sweep (a sweep file path or dict) with Ray Tune + Optuna, every trial in MLflow.

    ``model`` (an nn.Module subclass or a callable building one, called with the base's model
    options plus what describes the data when it names it: ``input_shape`` / ``num_classes``,
    ``vocab_size`` / ``block_size``) and ``data`` (a callable returning ``{"train": Dataset,
    "test": Dataset, "val": ... (optional), "num_classes" or "vocab_size": ... (optional)}``)
    replace the zoo's; ``task`` (a ``raysparse.Task`` subclass or instance) the config's
    ``task``; ``loop`` is a training loop of yours, ``loop(trial)`` (see
    ``raysparse.search.user_loop.LoopTrial``). They reach the trials by Ray's serialization, so
    classes and closures from a notebook or ``__main__`` work; each trial builds a fresh model.

    ``overrides`` replace top-level sweep keys (``num_samples=4``, ``tracking_uri=...``,
    ``name=...``) or pass ``address=`` (an existing Ray cluster) and ``home=`` (where the
    embedded MLflow store and Ray results live). Returns a ``SweepResult`` with ``.best()``,
    ``.pareto()``, ``.to_dataframe()``, ``.load_model()``, ``.tracking_uri``,
    ``.experiment_name``, ``.parent_run_id``.
    """
    from raysparse.search import PythonObjects, run_sweep  # Ray and Optuna load only when a sweep runs

    return run_sweep(space, objects=PythonObjects(model=model, data=data, loop=loop, task=task), **overrides)


def resume_sweep(name: str, *, model=None, data=None, loop=None, task=None, **options):
    """Continue sweep ``name`` after its driver stopped: finished trials are kept, the others go
    on from their last checkpoints in the same MLflow runs. ``options``: ``address=``, ``home=``,
    ``storage_path=`` (if the sweep set one), ``verbose=``. A sweep started with Python objects
    (``model=``, ``data=``, ``loop=``) needs them again: its files only record their names."""
    from raysparse.search import PythonObjects
    from raysparse.search import resume_sweep as resume

    return resume(name, objects=PythonObjects(model=model, data=data, loop=loop, task=task), **options)


def train(config: Config | dict | str | Path, *, model=None, data=None, task=None, report=None) -> dict:
    """Train one sparse network in this process; returns the final metrics.

    ``config`` is a dict, a YAML path or a Config. ``model`` is an nn.Module subclass or a
    callable building one (the config's model block holds its options; an nn.Module instance
    is trained as it is), ``data`` a zero-argument callable returning ``{"train": Dataset,
    "test": Dataset, ...}``, ``task`` a Task subclass or instance, as in ``sweep``.
    ``report(metrics, context)`` is called after every epoch.
    """
    from raysparse.train.loop import fit

    return fit(config, report, model=model, data=data, task=task)


def load_model(run, *, tracking_uri: str | None = None, model=None) -> nn.Module:
    """A trial's final network, masks in its weights, rebuilt from what its MLflow run logged.

    ``run`` is a run id or a row of ``best()`` / ``to_dataframe()``. The architecture comes
    from the run's ``model/config.json`` (zoo models, factories and Python classes that import
    here); ``model=`` gives it for one that does not (a closure, a loop's model). Without
    either, the run's torch.export program is loaded, with a warning. ``tracking_uri``
    defaults to ``MLFLOW_TRACKING_URI`` or the embedded server.
    """
    import os
    import tempfile

    from raysparse.tracking import default_home, download_model, ensure_local_server
    from raysparse.train.export import load_trained

    run_id = run if isinstance(run, str) else run["run_id"]
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ensure_local_server(default_home())
    with tempfile.TemporaryDirectory() as folder:
        return load_trained(download_model(uri, run_id, folder), model=model)


def layer_densities(
    model: nn.Module, density: float, distribution: str = "erk", dense_layers: Iterable[str] = ()
) -> dict[str, float]:
    """Per-layer densities that ``distribution`` gives ``model``'s weights that do a matmul (Conv,
    Linear, attention projections) at a global ``density`` (layers in ``dense_layers`` kept at 1.0)."""
    from raysparse.sparsity.distributions import get_distribution
    from raysparse.sparsity.masks import prunable_weights, resolve_dense_layers

    if not 0.0 <= density <= 1.0:
        raise ConfigError("density", f"got {density!r}; allowed: [0, 1]")
    weights = prunable_weights(model)
    dense = resolve_dense_layers(list(weights), dense_layers, field="dense_layers")
    return get_distribution(distribution, field="distribution")(weights, density, dense_layers=dense)
