"""Gradual magnitude pruning (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878).

At every ``update_frequency`` steps between ``prune_start`` and ``prune_end`` the smallest-
magnitude active weights are pruned to the polynomial schedule's sparsity. ``distribution:
global`` is one threshold across layers; uniform/er/erk prune layer-wise to that allocation.
With ``initial_sparsity`` > 0 training starts from random masks of that sparsity.
"""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register
from raysparse.sparsity.schedules import gmp_sparsity, is_gmp_update_step


@register
class GMP(SparseMethod):
    name = "gmp"
    paper = "https://arxiv.org/abs/1710.01878"

    def attach(self, model, optimizer, *, steps_per_epoch, total_steps):
        self.start = round(self.config.prune_start * steps_per_epoch)
        end_epoch = self.config.prune_end
        self.end = round(end_epoch * steps_per_epoch) if end_epoch is not None else total_steps // 2
        super().attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)

    def init_masks(self) -> None:
        if self.config.initial_sparsity > 0:
            density = 1.0 - self.config.initial_sparsity
            self.masks.update(self.random_masks(density), step=0, reason="init")

    def sparsity_at(self, step: int) -> float:
        cfg = self.config
        return gmp_sparsity(
            step, initial=cfg.initial_sparsity, final=cfg.final_sparsity,
            start=self.start, end=self.end, frequency=cfg.update_frequency, exponent=cfg.exponent,
        )

    def update_masks(self, step: int) -> None:
        if self.is_prune_step(step):
            self.prune_by_magnitude(1.0 - self.sparsity_at(step), step)

    def is_prune_step(self, step: int) -> bool:
        return is_gmp_update_step(step, start=self.start, end=self.end, frequency=self.config.update_frequency)
