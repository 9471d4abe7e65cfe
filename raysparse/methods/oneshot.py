"""One-shot magnitude pruning of a trained network, then fine-tuning (Han et al. 2015,
https://arxiv.org/abs/1506.02626): dense training until ``prune_end`` (the pruning window
collapses to its end; default half of training), one pruning step to ``final_sparsity``, then
fine-tuning for the remaining epochs."""

from raysparse.methods.base import SparseMethod
from raysparse.methods.registry import register


@register
class OneShot(SparseMethod):
    name = "oneshot"
    paper = "https://arxiv.org/abs/1506.02626"

    def attach(self, model, optimizer, *, steps_per_epoch, total_steps):
        end = self.config.prune_end
        self.prune_step = round(end * steps_per_epoch) if end is not None else total_steps // 2
        super().attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)

    def update_masks(self, step: int) -> None:
        if step == self.prune_step:
            self.prune_by_magnitude(self.target_density(), step, reason="oneshot")
