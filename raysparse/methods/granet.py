"""GraNet: gradual magnitude pruning with zero-cost neuroregeneration (Liu et al. 2021,
https://arxiv.org/abs/2106.10404).

GMP, plus: every ``update_frequency`` steps (right after the pruning step while the schedule
runs, and on after it until ``regrowth_end``) each layer drops a fraction r_t of its smallest
active weights and regrows as many at the inactive positions with the largest growth score
(gradient by default). r_t decays from ``regrowth_ratio`` to ``regrowth_floor``. With
``initial_sparsity`` > 0 (e.g. 0.5 on ERK masks) this is GraNet-ST, sparse-to-sparse.
"""

from dataclasses import dataclass

from raysparse.methods.gmp import GMP, GMPOptions
from raysparse.methods.registry import register
from raysparse.methods.rigl import GrowthOptions, RegrowthMixin


@dataclass(frozen=True)
class GraNetOptions(GrowthOptions, GMPOptions):
    """GMP's schedule and RigL's regrowth."""


@register
class GraNet(RegrowthMixin, GMP):
    name = "granet"
    paper = "https://arxiv.org/abs/2106.10404"
    Options = GraNetOptions

    def update_masks(self, step: int) -> None:
        pruned = self.is_prune_step(step)
        if pruned:
            self.prune_by_magnitude(1.0 - self.sparsity_at(step), step)
        if pruned or self.is_regrowth_step(step):
            self.regrow(step)
