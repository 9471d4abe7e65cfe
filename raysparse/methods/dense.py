"""Dense baseline: no masks change, nothing is applied."""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register


@register
class Dense(SparseMethod):
    name = "dense"
    prunes_without_training = True  # epochs 0: the trained network evaluated as it is

    def after_optimizer_step(self, step: int) -> None:
        pass  # all-ones masks: skip the multiply so the baseline is truly dense

    def target_density(self) -> float:
        return 1.0
