"""RigL (Evci et al. 2020, https://arxiv.org/abs/1911.11134): constant density; every
``update_frequency`` steps each layer drops its smallest-magnitude active weights and grows as
many where the gradient is largest. SET is RigL growing at random (set.py)."""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register
from raysparse.sparsity.schedules import REGROWTH_DECAYS
from raysparse.sparsity.scores import GROWTH_SCORES


class RegrowthMixin:
    """Drop-and-grow on a decaying ratio, shared by RigL, SET and GraNet."""

    growth: str | None = None  # a fixed growth criterion overrides the config's (SET: random)

    def attach(self, model, optimizer, *, steps_per_epoch, total_steps):
        end = self.config.regrowth_end
        self.regrowth_stop = round(end * steps_per_epoch) if end is not None else total_steps
        super().attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)

    def regrowth_ratio_at(self, step: int) -> float:
        cfg = self.config
        decay = REGROWTH_DECAYS[cfg.regrowth_decay]
        return decay(step, total=self.regrowth_stop, initial=cfg.regrowth_ratio, floor=cfg.regrowth_floor)

    def is_regrowth_step(self, step: int) -> bool:
        return 0 < step < self.regrowth_stop and step % self.config.update_frequency == 0

    def regrow(self, step: int) -> None:
        score = GROWTH_SCORES[self.growth or self.config.growth]
        self.drop_and_grow(self.regrowth_ratio_at(step), step, score)


@register
class RigL(RegrowthMixin, SparseMethod):
    name = "rigl"
    paper = "https://arxiv.org/abs/1911.11134"

    def init_masks(self) -> None:
        self.masks.update(self.random_masks(self.target_density()), step=0, reason="init")

    def update_masks(self, step: int) -> None:
        if self.is_regrowth_step(step):
            self.regrow(step)
