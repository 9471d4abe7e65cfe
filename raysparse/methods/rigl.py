"""RigL (Evci et al. 2020, https://arxiv.org/abs/1911.11134): constant density; every
``update_frequency`` steps each layer drops its smallest-magnitude active weights and grows as
many where the gradient is largest. SET is RigL growing at random (set.py)."""

from dataclasses import dataclass

from raysparse.errors import require, require_choice
from raysparse.methods.base import MethodOptions, SparseMethod
from raysparse.methods.registry import register
from raysparse.sparsity.schedules import REGROWTH_DECAYS
from raysparse.sparsity.scores import GROWTH_SCORES


@dataclass(frozen=True)
class RegrowthOptions(MethodOptions):
    """Drop-and-grow on a decaying ratio (RigL, SET, GraNet)."""

    regrowth_ratio: float = 0.5  # fraction of active weights dropped and regrown per update
    regrowth_decay: str = "cosine"
    regrowth_floor: float = 0.005
    regrowth_end: float | None = None  # epoch; None = end of training

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require_choice("sparsity.regrowth_decay", "regrowth decay", self.regrowth_decay, REGROWTH_DECAYS)
        require(0.0 <= self.regrowth_ratio <= 1.0, "sparsity.regrowth_ratio", self.regrowth_ratio, "[0, 1]")
        require(0.0 <= self.regrowth_floor <= self.regrowth_ratio, "sparsity.regrowth_floor", self.regrowth_floor,
                f"[0, regrowth_ratio={self.regrowth_ratio}]")
        if self.regrowth_end is not None:
            require(0 <= self.regrowth_end <= epochs, "sparsity.regrowth_end", self.regrowth_end,
                    f"an epoch in [0, {epochs}]")


@dataclass(frozen=True)
class GrowthOptions(RegrowthOptions):
    growth: str = "gradient"  # the score regrown weights are chosen by: gradient | momentum | random

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require_choice("sparsity.growth", "growth criterion", self.growth, GROWTH_SCORES)


class RegrowthMixin:
    """Drop-and-grow on a decaying ratio, shared by RigL, SET and GraNet."""

    @property
    def regrowth_stop(self) -> int:
        return self.epoch_to_step(self.options.regrowth_end, default=self.total_steps)

    def grow_score(self):
        return GROWTH_SCORES[self.options.growth]

    def regrowth_ratio_at(self, step: int) -> float:
        opts = self.options
        decay = REGROWTH_DECAYS[opts.regrowth_decay]
        return decay(step, total=self.regrowth_stop, initial=opts.regrowth_ratio, floor=opts.regrowth_floor)

    def is_regrowth_step(self, step: int) -> bool:
        return 0 < step < self.regrowth_stop and step % self.config.update_frequency == 0

    def regrow(self, step: int) -> None:
        self.drop_and_grow(self.regrowth_ratio_at(step), step, self.grow_score())


@register
class RigL(RegrowthMixin, SparseMethod):
    name = "rigl"
    paper = "https://arxiv.org/abs/1911.11134"
    Options = GrowthOptions
    takes_pattern = True  # random initial masks under the pattern; drop and grow keep it (drop_and_grow)

    def init_masks(self) -> None:
        self.masks.update(self.random_masks(self.target_density()), step=0, reason="init")

    def update_masks(self, step: int) -> None:
        if self.is_regrowth_step(step):
            self.regrow(step)
