"""SET (Mocanu et al. 2018, https://arxiv.org/abs/1707.04780): RigL that grows at random."""

from raysparse.methods.registry import register
from raysparse.methods.rigl import RegrowthOptions, RigL
from raysparse.sparsity.scores import random_score


@register
class SET(RigL):
    name = "set"
    paper = "https://arxiv.org/abs/1707.04780"
    Options = RegrowthOptions  # no `growth`: SET always grows at random

    def grow_score(self):
        return random_score
