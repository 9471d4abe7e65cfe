"""DST: Dynamic Sparse Training with trainable masked layers (Liu et al. 2020,
https://arxiv.org/abs/2005.06870).

Each weight that does a matmul (Conv, Linear, nn.MultiheadAttention's ``in_proj_weight``) gets a
trainable threshold per output neuron / filter (row); the forward pass
uses W * step(|W| - t), so masked weights keep their values and their gradients (through the
step's estimator) and can come back. The loss adds alpha * sum(exp(-t)); a layer whose keep
ratio falls to 1% or less gets its thresholds reset to 0 (the seed's rule).

Two things the seed's users missed, added here:
- ``density_control: target`` (default). Sparsity only emerges from alpha in the seed, so a
  chosen sparsity is hit by trial and error. Here alpha is steered multiplicatively every
  ``update_frequency`` steps toward the GMP-shaped target density of the schedule (prune_start
  to prune_end, ending at ``final_sparsity``); at ``prune_end`` a projection shifts all
  thresholds by one constant so exactly the target fraction of weights survives, and the
  masks are frozen for fine-tuning. ``density_control: free`` is the seed's behaviour.
- Thresholds are kept >= 0: a negative threshold masks nothing more than 0 does (|W| >= 0),
  but lets exp(-t) grow without bound, a route to the inf/NaN losses the seed's users saw. A
  loss that still turns NaN/inf stops the run with that reason (the loop's guard).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from raysparse.errors import require, require_choice
from raysparse.methods.base import SparseMethod
from raysparse.methods.gmp import GMPOptions
from raysparse.methods.registry import register
from raysparse.sparsity.masks import MaskSet, prunable_weights, resolve_dense_layers, weight_slots
from raysparse.sparsity.schedules import gmp_sparsity
from raysparse.sparsity.scores import topk_mask

RESET_KEEP_RATIO = 0.01


class BinaryStep(torch.autograd.Function):
    """step(x) forward; the seed's estimator backward: 2 - 4|x| on |x| <= 0.4, 0.4 on
    0.4 < |x| <= 1, 0 beyond."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        magnitude = x.abs()
        slope = torch.where(magnitude <= 0.4, 2 - 4 * magnitude, torch.where(magnitude <= 1.0, 0.4, 0.0))
        return grad_output * slope


class ThresholdMask(nn.Module):
    """A parametrization: weight -> weight * step(|weight| - threshold), one threshold per
    output channel; after ``freeze`` the mask is a fixed buffer."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
        self.threshold = nn.Parameter(torch.zeros(shape, device=weight.device, dtype=weight.dtype))
        self.register_buffer("frozen_mask", torch.ones_like(weight, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.frozen_mask
        return (weight.detach().abs() > self.threshold.detach()).expand_as(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return weight * self.frozen_mask
        return weight * BinaryStep.apply(weight.abs() - self.threshold)


@dataclass(frozen=True)
class DSTOptions(GMPOptions):
    """``exponent`` (GMP's) shapes the target density the controller steers along."""

    alpha: float = 5e-4  # weight of the threshold regularizer alpha * sum(exp(-t))
    density_control: str = "target"  # 'target' steers alpha to final_sparsity; 'free' = the seed
    controller_gain: float = 1.0  # log-alpha change per update per unit of relative density error

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require(self.alpha >= 0, "sparsity.alpha", self.alpha, "a number >= 0")
        require_choice("sparsity.density_control", "density control", self.density_control, ("target", "free"))
        require(self.controller_gain > 0, "sparsity.controller_gain", self.controller_gain, "a number > 0")


@register
class DST(SparseMethod):
    name = "dst"
    paper = "https://arxiv.org/abs/2005.06870"
    Options = DSTOptions
    density_tolerance = 0.01  # the target is met by projection to rounding; free mode has none

    def build_masks(self, model: nn.Module) -> MaskSet:
        """Gate every selected layer with a trainable threshold; the masks follow the thresholds."""
        cfg = self.config
        self.end = min(self.prune_end_step, self.total_steps - 1)  # the projection must happen on a step that runs
        weights = prunable_weights(model, include=cfg.include, exclude=cfg.exclude)
        dense = resolve_dense_layers(list(weights), cfg.dense_layers)
        self.gates: dict[str, ThresholdMask] = {}
        slots = weight_slots(model)  # a mask name's module and attribute: ``weight``, or ``in_proj_weight``
        originals = {}
        for name in weights:
            module, attribute = slots[name]
            if name in dense:
                originals[name] = getattr(module, attribute)
                continue
            parametrize.register_parametrization(module, attribute, ThresholdMask(getattr(module, attribute)))
            self.gates[name] = module.parametrizations[attribute][0]
            originals[name] = module.parametrizations[attribute].original
        self.dense_count = sum(originals[n].numel() for n in dense)
        thresholds = [g.threshold for g in self.gates.values()]
        self.optimizer.add_param_group({"params": thresholds, "weight_decay": 0.0})  # decay would fight alpha
        self.alpha = self.options.alpha
        # the masks never write to the weights: the gates do the masking
        return MaskSet({n: originals[n] for n in weights}, dense, apply_to_weights=False)

    def init_masks(self) -> None:
        self.sync_masks(step=0, reason="init")

    # ---- hooks ------------------------------------------------------------------------------
    def regularization_loss(self) -> torch.Tensor:
        # every threshold stays in the graph, even frozen, so DDP always sees their gradients
        return self.alpha * sum(torch.exp(-g.threshold).sum() for g in self.gates.values())

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for gate in self.gates.values():
            gate.threshold.clamp_(min=0.0)
        if self.frozen or step % self.config.update_frequency:
            return
        self.reset_collapsed_layers()
        if self.options.density_control != "target":
            return
        if step >= self.end:
            self.project(step)
        elif step >= self.prune_start_step:
            self._steer_alpha(step)

    @property
    def frozen(self) -> bool:
        return any(bool(g.frozen) for g in self.gates.values())

    @torch.no_grad()
    def reset_collapsed_layers(self) -> None:
        """The seed's rule (checked every ``update_frequency`` steps, not every forward): a layer
        keeping <= 1% of its weights gets its thresholds reset to 0, i.e. starts dense again."""
        for name, gate in self.gates.items():
            if float(gate.mask(self.masks.weights[name]).float().mean()) <= RESET_KEEP_RATIO:
                gate.threshold.zero_()

    def on_epoch_end(self, epoch: int) -> None:
        self.sync_masks(step=(epoch + 1) * self.steps_per_epoch, reason="dst")

    def target_density(self) -> float:
        return 1.0 - self.config.final_sparsity if self.options.density_control == "target" else math.nan

    def export(self, model: nn.Module) -> nn.Module:
        """A plain copy of ``model``: masks multiplied into the weights, no parametrizations."""
        plain = copy.deepcopy(model)
        slots = weight_slots(plain)
        owners = {id(slots[name][0]): slots[name][0] for name in self.gates}
        for module in owners.values():  # once per module: an attention module may hold three gated weights
            _unparametrize_copy(module)
        return plain

    def state_dict(self) -> dict:
        return {**super().state_dict(), "alpha": torch.tensor(self.alpha, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.alpha = float(state["alpha"])

    # ---- internals --------------------------------------------------------------------------
    def _current_masks(self) -> dict[str, torch.Tensor]:
        return {n: g.mask(self.masks.weights[n]) for n, g in self.gates.items()}

    def _density(self) -> float:
        kept = sum(int(m.sum()) for m in self._current_masks().values()) + self.dense_count
        return kept / self.masks.count()[1]

    def sync_masks(self, step: int, reason: str) -> None:
        self.masks.update({n: m.clone() for n, m in self._current_masks().items()}, step=step, reason=reason)

    def _steer_alpha(self, step: int) -> None:
        """alpha *= exp(gain * relative density error): too dense -> stronger pull on thresholds."""
        cfg = self.config
        target = 1.0 - gmp_sparsity(step, initial=cfg.initial_sparsity, final=cfg.final_sparsity,
                                    start=self.prune_start_step, end=self.end, exponent=self.options.exponent)
        error = (self._density() - target) / max(target, 1e-3)
        self.alpha *= math.exp(self.options.controller_gain * max(-1.0, min(1.0, error)))
        self.alpha = min(max(self.alpha, 1e-12), 1e3)

    @torch.no_grad()
    def project(self, step: int) -> None:
        """Keep exactly the target number of weights, those with the largest margin |W| - t_row
        (the same as shifting every threshold by one constant), then freeze the masks."""
        margins = {n: self.masks.weights[n].abs() - g.threshold for n, g in self.gates.items()}
        keep = round((1.0 - self.config.final_sparsity) * self.masks.count()[1]) - self.dense_count
        flat = torch.cat([m.flatten() for m in margins.values()])
        chosen = topk_mask(flat, keep)  # an exact count, ties included
        offset = 0
        for name, gate in self.gates.items():
            size = margins[name].numel()
            gate.frozen_mask.copy_(chosen[offset:offset + size].view_as(margins[name]))
            gate.frozen.fill_(True)
            offset += size
        self.masks.update({n: g.frozen_mask.clone() for n, g in self.gates.items()}, step=step, reason="project")


def _unparametrize_copy(module: nn.Module) -> None:
    """Turn a deep-copied parametrized module back into its plain class with the masked weights.

    Not ``remove_parametrizations``: a deep copy shares its injected ``Parametrized<Class>``
    with the original, and removing the property from that class would break the original.
    """
    masked = {attribute: getattr(module, attribute).detach().clone() for attribute in module.parametrizations}
    module.__class__ = module.__class__.__bases__[0]  # parametrize injects one subclass
    del module._modules["parametrizations"]
    for attribute, weight in masked.items():
        setattr(module, attribute, nn.Parameter(weight))
