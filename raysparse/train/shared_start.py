"""What every trial of a post-training sweep computes alike, computed once (``epochs: 0``).

A sweep over the allocation of a pretrained network (``layer_sparsity`` with ``epochs: 0``) runs
the same start in every trial: load the dense network, run the calibration batches through it for
the method's statistics (Wanda's input norms), and only then prune at the trial's own densities.
:func:`compute_shared_start` does that start once; the sweep puts the result in Ray's object store
(``search/shared_start.py``), and each trial builds its network without weights (on the meta
device), copies the shared ones in and gives the method its statistics. Arrays are numpy, so that
trials on one node read the store's one copy without copying it (``read_only`` says they did).

A trial whose config differs where it matters (``SharedStart.key``: model, data, task, seed,
``init_from``, the method and its calibration options, the layer selection) computes its own.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raysparse.config import Config
from raysparse.train.memory import release_freed_memory

# bfloat16 has no numpy dtype: its bits travel as int16
_BITS = {torch.bfloat16: np.int16}


@dataclass(frozen=True)
class SharedStart:
    key: str
    tensors: dict[str, tuple[np.ndarray, str]]  # every parameter and buffer (tied ones once): (array, torch dtype)
    statistics: dict[str, dict[str, np.ndarray | None]]  # the method's: kind -> per weight
    ties: dict[str, str]  # a parameter that is another one (a head tied to the embedding) -> that one
    flops: tuple[float, dict[str, float]]  # the dense network's, and per layer (the same for every trial)
    # the heuristics' allocations at the config's target ("uniform", and "owl" from the method's
    # activation-aware scores), and the masked layers' sizes: what a searched allocation is drawn against
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    layer_sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # what computing it took, once

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a, _ in self.tensors.values()) + sum(
            a.nbytes for kind in self.statistics.values() for a in kind.values() if a is not None)

    @property
    def read_only(self) -> bool:
        """True where the arrays are views of Ray's object store (not writable), not copies."""
        return all(not a.flags.writeable for a, _ in self.tensors.values())

    def load_into(self, net: nn.Module) -> None:
        """The shared weights and buffers into ``net`` (its own memory: pruning writes into it); tied
        parameters tied again (a meta build's move to real memory gives each its own)."""
        for alias, original in self.ties.items():
            owner, _, leaf = alias.rpartition(".")
            setattr(net.get_submodule(owner) if owner else net, leaf, _tensor_of(net, original))
        with torch.no_grad():
            for name, (array, dtype) in self.tensors.items():
                _tensor_of(net, name).copy_(_to_torch(array, dtype))

    def torch_statistics(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """The method's statistics as tensors: views, read only (the method never writes them)."""
        return {kind: {n: None if a is None else _to_torch(a, str(a.dtype)) for n, a in arrays.items()}
                for kind, arrays in self.statistics.items()}


def start_key(cfg: Config) -> str:
    """What the shared start depends on: trials that agree on it may use one."""
    sparsity = cfg.sparsity
    options = {k: getattr(sparsity.options, k, None) for k in ("calibration_batches", "sequential")}
    return json.dumps({
        "model": cfg.model, "data": cfg.data, "task": cfg.task, "seed": cfg.seed, "init_from": cfg.init_from,
        "method": sparsity.method, "options": options, "include": sparsity.include, "exclude": sparsity.exclude,
        "dense_layers": sparsity.dense_layers, "device": cfg.device,
    }, sort_keys=True, default=str)


def compute_shared_start(config: Config | dict) -> SharedStart | None:
    """The dense network and the method's calibration statistics of ``config``'s start (none
    where they depend on the trial's own pruning: SparseGPT's Hessians, a sequential Wanda's
    norms; the weights are shared still), or None for a run that trains (``epochs`` > 0)."""
    from raysparse.config import load_config
    from raysparse.train.loop import _Run

    cfg = load_config(config)
    if cfg.epochs != 0:
        return None
    started = time.perf_counter()
    run = _Run(cfg, None, None)
    statistics = run.method.calibration_statistics() or {}
    first: dict[int, str] = {}
    tensors: dict[str, tuple[np.ndarray, str]] = {}
    ties: dict[str, str] = {}
    named = list(run.net.named_parameters(remove_duplicate=False)) + list(run.net.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if id(tensor) in first:  # a tied head is the embedding: once
            ties[name] = first[id(tensor)]
            continue
        first[id(tensor)] = name
        tensors[name] = _to_numpy(tensor.detach().cpu())
    stats = {kind: {n: None if s is None else s.detach().cpu().numpy() for n, s in arrays.items()}
             for kind, arrays in statistics.items()}
    start = SharedStart(start_key(cfg), tensors, stats, ties, (run.flops_now, run.flops_by_layer),
                        reference_allocations(run.method, statistics),
                        {n: w.numel() for n, w in run.method.masks.weights.items()},
                        round(time.perf_counter() - started, 1))
    del run, statistics, named
    release_freed_memory()
    return start


def reference_allocations(method, statistics: dict) -> dict[str, dict[str, float]]:
    """The uniform allocation at ``method``'s target density, and OWL's from Wanda's scores of the
    dense network (its input norms: the shared ones, or one calibration pass for a method with
    activation-aware scores that shares none, such as SparseGPT)."""
    from raysparse.methods.wanda import input_norms, wanda_score
    from raysparse.sparsity.distributions import configured_distribution

    weights, dense = method.masks.weights, method.masks.dense_layers
    density = method.target_density()
    references = {"uniform": configured_distribution("uniform")(weights, density, dense_layers=dense)}
    norms = statistics.get("norms")
    if norms is None and method.activation_scores:
        norms = input_norms(method.model, weights, method._calibration_batches(), run=method.run_batch)
    if norms is not None and method.activation_scores:
        options = method.config.distribution_options if method.config.distribution == "owl" else None
        scores = {n: wanda_score(w, norms[n]) for n, w in weights.items()}
        references["owl"] = configured_distribution("owl", options)(scores, density, dense_layers=dense)
    return {name: {n: float(d) for n, d in allocation.items()} for name, allocation in references.items()}


def build_on_meta(build):
    """``build()`` without allocating or initialising weights; then real (empty) CPU memory."""
    with torch.device("meta"):
        net = build()
    return net.to_empty(device="cpu")


def _tensor_of(net: nn.Module, name: str) -> torch.Tensor:
    owner, _, leaf = name.rpartition(".")
    module = net.get_submodule(owner) if owner else net
    return getattr(module, leaf)


def _to_numpy(tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.dtype in _BITS:
        return tensor.view(torch.int16).numpy(), dtype
    return tensor.numpy(), dtype


def _to_torch(array: np.ndarray, dtype: str) -> torch.Tensor:
    """A view of ``array``, read from only (copied into the trial's network)."""
    torch_dtype = getattr(torch, dtype)
    with warnings.catch_warnings():  # torch warns that a read-only array is not writable: it is not written
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    return tensor.view(torch_dtype) if torch_dtype in _BITS else tensor
