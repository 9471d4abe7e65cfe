"""Static sparse training: random masks drawn once (uniform / ER / ERK), never changed."""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register


@register
class Static(SparseMethod):
    name = "static"
    paper = "https://arxiv.org/abs/1707.04780 (Erdos-Renyi masks, Mocanu et al. 2018)"
    takes_pattern = True  # random masks that hold the pattern
    prunes_without_training = True  # its masks are drawn at attach

    def init_masks(self) -> None:
        self.masks.update(self.random_masks(self.target_density()), step=0, reason="init")
