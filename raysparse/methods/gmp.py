"""Gradual magnitude pruning (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878).

At every ``update_frequency`` steps between ``prune_start`` and ``prune_end`` the smallest-
magnitude active weights are pruned to the polynomial schedule's sparsity. ``distribution:
global`` is one threshold across layers; uniform/er/erk prune layer-wise to that allocation.
With ``initial_sparsity`` > 0 training starts from random masks of that sparsity.
"""

from dataclasses import dataclass

from raysparse.errors import require
from raysparse.methods.base import MethodOptions, SparseMethod
from raysparse.methods.registry import register
from raysparse.sparsity.schedules import gmp_sparsity, is_gmp_update_step


@dataclass(frozen=True)
class GMPOptions(MethodOptions):
    exponent: float = 3.0  # of the polynomial schedule s_t = s_f + (s_i - s_f)(1 - progress)^exponent

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require(self.exponent > 0, "sparsity.exponent", self.exponent, "a number > 0")


@register
class GMP(SparseMethod):
    name = "gmp"
    paper = "https://arxiv.org/abs/1710.01878"
    Options = GMPOptions
    takes_pattern = True  # each pruning step keeps the best weights the pattern allows

    def init_masks(self) -> None:
        if self.config.initial_sparsity > 0:
            density = 1.0 - self.config.initial_sparsity
            self.masks.update(self.random_masks(density), step=0, reason="init")

    def sparsity_at(self, step: int) -> float:
        cfg = self.config
        return gmp_sparsity(
            step, initial=cfg.initial_sparsity, final=cfg.final_sparsity, start=self.prune_start_step,
            end=self.prune_end_step, frequency=cfg.update_frequency, exponent=self.options.exponent,
        )

    def update_masks(self, step: int) -> None:
        if self.is_prune_step(step):
            self.prune_by_magnitude(1.0 - self.sparsity_at(step), step)

    def is_prune_step(self, step: int) -> bool:
        return is_gmp_update_step(
            step, start=self.prune_start_step, end=self.prune_end_step, frequency=self.config.update_frequency
        )
