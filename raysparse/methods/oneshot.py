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
    takes_pattern = True
    prunes_trained_network = True
    prunes_without_training = True

    def on_train_start(self) -> None:
        if self.prune_end_step == 0:  # a loaded network (init_from, epochs 0), pruned before any step
            self.prune_by_magnitude(self.target_density(), 0, reason="oneshot")

    def update_masks(self, step: int) -> None:
        if step == self.prune_end_step:
            self.prune_by_magnitude(self.target_density(), step, reason="oneshot")
