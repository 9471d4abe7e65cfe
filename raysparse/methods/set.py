"""SET (Mocanu et al. 2018, https://arxiv.org/abs/1707.04780): RigL that grows at random."""

from raysparse.methods.registry import register
from raysparse.methods.rigl import RigL


@register
class SET(RigL):
    name = "set"
    paper = "https://arxiv.org/abs/1707.04780"
    growth = "random"
