"""The method interface: a small base class whose hooks the one training loop calls.

Per training step the loop does::

    loss = criterion(model(x), y) + method.regularization_loss()
    loss.backward();  method.after_backward(step)
    optimizer.step(); method.after_optimizer_step(step)   # apply masks, then maybe update them

A method changes masks only through ``self.masks.update(...)``, which zeroes weights and
optimizer state where the mask changed, broadcasts rank 0's masks under DDP and records a
lineage event. A method overrides ``init_masks`` and/or ``update_masks``; nothing else.

Options: ``self.config`` holds what every method shares (a ``SparsityConfig``), ``self.options``
the method's own, an instance of its ``Options`` dataclass (declared in the method's file, checked
by its ``check``). Both come from one flat ``sparsity:`` block of a config.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.sparsity.distributions import cap_densities, configured_distribution, kept_counts
from raysparse.sparsity.masks import MaskSet, prunable_weights, resolve_dense_layers
from raysparse.sparsity.patterns import UNSTRUCTURED, Pattern, layer_patterns, parse_pattern, unpatterned_layers
from raysparse.sparsity.scores import magnitude


@dataclass(frozen=True)
class MethodOptions:
    """Base of a method's own options. Each field is a key of the flat ``sparsity:`` block, typed
    (the config checks types from the annotations) with its default; ``check`` checks values."""

    def check(self, *, epochs: int) -> None:
        """Raise ``raysparse.errors.ConfigError("sparsity.<key>", ...)`` naming the bad value and
        what is allowed (``raysparse.errors.require`` writes that line). Cooperative: a subclass
        calls ``super().check(epochs=epochs)`` so options built from several parents check all."""


@dataclass(frozen=True)
class SparsityConfig:
    """What every method shares. Epoch-valued fields are converted to steps once, in ``attach``."""

    method: str = "dense"  # a registered name or an import path 'package.module:Class'
    distribution: str = "erk"
    pattern: str = "unstructured"  # | 'N:M' (e.g. '2:4') | 'block:RxC' (e.g. 'block:1x4'); sparsity/patterns.py
    initial_sparsity: float = 0.0
    final_sparsity: float = 0.9
    prune_start: float = 0  # epoch
    prune_end: float | None = None  # epoch; None = half of training (GraNet's CIFAR setting)
    update_frequency: int = 100  # steps between mask updates
    dense_layers: tuple[str, ...] = ()
    layer_densities: dict[str, float] | None = None  # for distribution 'explicit'
    distribution_options: dict[str, float] | None = None  # for distribution 'owl': {M: 5, lambda: 0.08}
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    options: MethodOptions | None = None  # the method's own (None: its defaults); not a YAML key

    def to_dict(self) -> dict[str, Any]:
        """The flat ``sparsity:`` block again: shared keys and the method's options side by side."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        own = dataclasses.asdict(self.options) if self.options is not None else {}
        return {**shared, **own}


@dataclass(frozen=True)
class Restructure:
    """A method rebuilt the model's structure (HAP's compaction) after ``epochs_done`` epochs: the
    loop builds a fresh optimizer (at ``lr``; None: the configured one) and LR schedule."""

    epochs_done: int
    lr: float | None = None


class SparseMethod:
    """Base class. ``name`` is the registry key; ``paper`` links the method's source."""

    name = "base"
    paper = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # a method's own options dataclass
    density_tolerance = 0.0  # how far the final density may be from target_density() (exact methods: 0)
    # True: every mask this method sets holds ``sparsity.pattern`` (it picks masks through the helpers
    # below, or with ``pattern_of(name).select``); False: the method refuses a pattern before it starts
    takes_pattern: ClassVar[bool] = False
    # True: it prunes a trained network (from ``init_from``); a sweep with a dense stage (``pretrain:``)
    # then starts its trials from the stage's weights unless their config sets ``init_from``
    prunes_trained_network: ClassVar[bool] = False
    # True: it sets its masks before the first step when asked (prune_end 0), so ``epochs: 0`` runs it:
    # load a trained network, prune it with calibration batches, evaluate, no training
    prunes_without_training: ClassVar[bool] = False
    # True: the scores it gives ``layer_targets`` are activation-aware (|W| * ||X||), which 'owl'
    # counts outliers of; the other methods refuse 'owl'
    activation_scores: ClassVar[bool] = False

    def __init__(self, config: SparsityConfig, *, seed: int = 0):
        options = config.options if config.options is not None else self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(f"method {self.name!r} takes {self.Options.__name__}, got {type(options).__name__}")
        self.config, self.options = config, options
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.task = self.train_batches = self.example_input = None  # until bind()
        self.shared_statistics: dict | None = None  # calibration_statistics() computed once for a sweep
        self._restructure: Restructure | None = None

    # ---- set-up ---------------------------------------------------------------------------
    def attach(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int
    ) -> None:
        cfg = self.config
        self.model, self.optimizer = model, optimizer
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.epochs = total_steps // steps_per_epoch
        # the pruning window, converted here once: in steps, and in whole epochs for the methods
        # that act at epoch ends (HAP); prune_end's default is half of training
        self.prune_start_step = self.epoch_to_step(cfg.prune_start, default=0)
        self.prune_end_step = self.epoch_to_step(cfg.prune_end, default=total_steps // 2)
        self.prune_end_epoch = round(cfg.prune_end) if cfg.prune_end is not None else self.epochs // 2
        self.masks = self.build_masks(model)
        self.follow_pattern()
        self.init_masks()  # its event stays queued: the first report logs the initial masks

    def epoch_to_step(self, epoch: float | None, default: int) -> int:
        """The step an epoch-valued option names (``default`` when it is None)."""
        return default if epoch is None else round(epoch * self.steps_per_epoch)

    def build_masks(self, model: nn.Module) -> MaskSet:
        """The masks over the selected layers (all ones); DST overrides it to gate its layers."""
        cfg = self.config
        weights = prunable_weights(model, include=cfg.include, exclude=cfg.exclude)
        if not weights:
            raise ConfigError("sparsity.include", "no weight that does a matmul (Conv, Linear, attention) "
                              "matches; nothing to prune")
        return MaskSet(weights, resolve_dense_layers(list(weights), cfg.dense_layers))

    def follow_pattern(self) -> None:
        """Each masked layer's pattern: ``sparsity.pattern`` where the layer's shape divides by it,
        unstructured elsewhere (a warning names those layers, ``pattern_coverage`` counts them)."""
        pattern = parse_pattern(self.config.pattern)
        if pattern is not UNSTRUCTURED and not self.takes_pattern:  # load_config refuses it earlier
            raise ConfigError("sparsity.pattern",
                              f"got {pattern.name!r}; method {self.name!r} takes 'unstructured' only")
        shapes = {n: w.shape for n, w in self.masks.weights.items()}
        self.pattern = pattern
        self.patterns = layer_patterns(pattern, shapes, self.masks.dense_layers)
        self.masks.enforce(self.patterns)
        left = unpatterned_layers(pattern, shapes, self.masks.dense_layers)
        if left:
            listed = ", ".join(f"{n} {list(shapes[n])}" for n in left[:4]) + (", ..." if len(left) > 4 else "")
            warnings.warn(f"sparsity.pattern {pattern.name!r}: {len(left)} layer(s) stay unstructured, their "
                          f"shape does not divide by the pattern: {listed}", stacklevel=2)

    def pattern_of(self, name: str) -> Pattern:
        return getattr(self, "patterns", {}).get(name, UNSTRUCTURED)

    def bind(self, *, task, train_batches, example_input) -> None:
        """What a method may need beyond the model: the task (a ``raysparse.tasks.Task``: the loss
        of a batch, how to run the model on one), a zero-argument callable giving a fresh iterator
        of shuffled training batches (for its own estimates: HAP's Hessian, Wanda's activation
        norms) and one giving a real model input of one example on the model's device."""
        self.task, self.train_batches, self.example_input = task, train_batches, example_input

    def batch_loss(self, batch) -> torch.Tensor:
        """The task's mean loss of a training batch, on the model's device."""
        device = next(self.model.parameters()).device
        return self.task.loss(self.model, self.task.to_device(batch, device))[0]

    def run_batch(self, batch):
        """The model on a training batch (on the model's device), as the task calls it."""
        device = next(self.model.parameters()).device
        return self.task.forward(self.model, self.task.to_device(batch, device))

    def calibration_statistics(self) -> dict[str, dict[str, torch.Tensor | None]] | None:
        """What this method computes from the dense network and the calibration batches before it
        prunes, the same for every allocation (Wanda's input norms and each row's order of scores),
        as ``{kind: {weight name: tensor or None}}``: a post-training sweep computes it once and
        hands it to every trial as ``shared_statistics``. None: nothing to share."""
        return None

    # ---- hooks the loop calls ---------------------------------------------------------------
    def on_train_start(self) -> None:
        """Before the first epoch of a run that is not resumed."""

    def init_masks(self) -> None:
        """Masks at the start of training (default: dense)."""

    def after_backward(self, step: int) -> None:
        """Gradients of this step are in ``.grad``; weights not yet updated."""

    def after_optimizer_step(self, step: int) -> None:
        self.masks.apply()
        self.update_masks(step)

    def update_masks(self, step: int) -> None:
        """Change masks at this step if the method's schedule says so."""

    def regularization_loss(self) -> torch.Tensor | None:
        """A term added to the loss (DST's threshold penalty); None for most methods."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        """After each epoch's training steps, before its evaluation."""

    def target_density(self) -> float:
        """The global density this method ends training at."""
        return 1.0 - self.config.final_sparsity

    def density(self) -> float:
        """Kept fraction of the prunable weights (a structured method counts removed weights)."""
        return self.masks.density()

    def layer_density(self) -> dict[str, float]:
        return self.masks.layer_density()

    def metrics(self) -> dict[str, float]:
        """Figures of the method's own reported each epoch (HAP's channel counts). Under a pattern:
        ``pattern_coverage``, the fraction of the pruned layers' weights whose layer holds it."""
        if getattr(self, "pattern", UNSTRUCTURED) is UNSTRUCTURED:
            return {}
        pruned = {n: w.numel() for n, w in self.masks.weights.items() if n not in self.masks.dense_layers}
        held = sum(size for n, size in pruned.items() if self.pattern_of(n) is not UNSTRUCTURED)
        return {"pattern_coverage": held / max(sum(pruned.values()), 1)}

    def export(self, model: nn.Module) -> nn.Module:
        """The trained model as a plain nn.Module (masks in the weights, no method machinery)."""
        return model

    # ---- structural changes (HAP): the loop asks, the method never reaches into the loop -------
    def restructured(self, epochs_done: int, lr: float | None = None) -> None:
        """For a method that rebuilt the model: the loop follows at its next ``take_restructure``."""
        self._restructure = Restructure(epochs_done, lr)

    def take_restructure(self) -> Restructure | None:
        """The structural change since the last call (then the loop builds a fresh optimizer and
        passes it to ``use_optimizer``), or None."""
        change, self._restructure = self._restructure, None
        return change

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer the loop built after a structural change: mask updates reset its state."""
        self.optimizer = optimizer

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"masks": self.masks.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.masks.load_state_dict(state["masks"])
        self.generator.set_state(state["generator"])

    # ---- building blocks shared by the methods ------------------------------------------------
    def layer_targets(self, scores: dict[str, torch.Tensor], density: float) -> dict[str, int]:
        """Weights to keep per layer at ``density``, allocated by the configured distribution.

        ``scores`` stand in for the weights: 'global' ranks them across layers, the others
        only read their shapes. A layer under an N:M pattern holds at most N/M; what it cannot
        hold goes to the other layers (``cap_densities``).
        """
        cfg = self.config
        distribution = configured_distribution(cfg.distribution, cfg.distribution_options)
        densities = distribution(
            scores, density, dense_layers=self.masks.dense_layers, densities=cfg.layer_densities
        )
        sizes = {n: s.numel() for n, s in scores.items()}
        caps = {n: self.pattern_of(n).max_density for n in scores}
        fixed = frozenset(cfg.layer_densities or ()) if cfg.distribution == "explicit" else frozenset()
        return kept_counts(cap_densities(densities, sizes, caps, fixed), sizes)

    def masks_from_scores(
        self, scores: dict[str, torch.Tensor], density: float, *, among_active: bool
    ) -> dict[str, torch.Tensor]:
        """Keep the top-scored weights per layer (only among active ones if ``among_active``)."""
        if among_active:  # pruned weights rank last, also for the 'global' distribution
            scores = {n: s * self.masks.masks[n] for n, s in scores.items()}
        counts = self.layer_targets(scores, density)
        new = {}
        for name, score in scores.items():
            if name in self.masks.dense_layers:
                continue
            candidates = self.masks.masks[name] if among_active else torch.ones_like(self.masks.masks[name])
            new[name] = self.pattern_of(name).select(score, candidates, counts[name])
        return new

    def random_masks(self, density: float) -> dict[str, torch.Tensor]:
        """Random masks with exact per-layer counts (the seeds sample rand < d: inexact)."""
        scores = {n: torch.rand(w.shape, generator=self.generator).to(w.device) for n, w in self.masks.weights.items()}
        if self.config.distribution == "global":  # allocate counts by magnitude, place at random
            counts = self.layer_targets({n: magnitude(w) for n, w in self.masks.weights.items()}, density)
        else:
            counts = self.layer_targets(scores, density)
        return {
            n: self.pattern_of(n).select(s, torch.ones_like(s, dtype=torch.bool), counts[n])
            for n, s in scores.items()
            if n not in self.masks.dense_layers
        }

    def prune_by_magnitude(self, density: float, step: int, reason: str = "prune") -> None:
        scores = {n: magnitude(w) for n, w in self.masks.weights.items()}
        self.masks.update(
            self.masks_from_scores(scores, density, among_active=True),
            step=step, reason=reason, optimizer=self.optimizer,
        )

    def drop_and_grow(self, ratio: float, step: int, grow_score, reason: str = "regrow") -> None:
        """In each layer drop ceil(ratio * nnz) smallest-magnitude active weights and grow as
        many inactive ones with the highest ``grow_score`` (regrown weights start at zero with
        fresh optimizer state). Density is unchanged. Under a pattern both steps keep it: whole
        blocks are dropped and grown, an N:M group grows only into the room its drops left."""
        new, reset = {}, {}
        for name, weight in self.masks.weights.items():
            if name in self.masks.dense_layers:
                continue
            mask, pattern = self.masks.masks[name], self.pattern_of(name)
            active = int(mask.sum())
            n = pattern.unit * math.ceil(ratio * active / pattern.unit)
            if n == 0 or active == mask.numel():  # a dense layer has nowhere to grow into
                continue
            kept = pattern.select(magnitude(weight), mask, active - n)
            grown = pattern.select(grow_score(weight, self.optimizer, self.generator), ~kept, n, kept=kept)
            new[name], reset[name] = kept | grown, grown & mask
        self.masks.update(new, step=step, reason=reason, optimizer=self.optimizer, reset=reset)
