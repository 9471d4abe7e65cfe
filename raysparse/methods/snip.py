"""SNIP (Lee et al. 2019, https://arxiv.org/abs/1810.02340): prune once at initialization by
connection saliency |g * w| on the first training batch, then train the sparse network."""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register


@register
class SNIP(SparseMethod):
    name = "snip"
    paper = "https://arxiv.org/abs/1810.02340"
    takes_pattern = True  # the top saliencies the pattern allows

    def after_backward(self, step: int) -> None:
        if step != 0:
            return
        saliency = {n: (w.grad * w).detach().abs() for n, w in self.masks.weights.items()}
        new = self.masks_from_scores(saliency, self.target_density(), among_active=False)
        self.masks.update(new, step=step, reason="snip", optimizer=self.optimizer)
        for name, weight in self.masks.weights.items():  # this first step must not move pruned weights
            weight.grad.mul_(self.masks.masks[name])
