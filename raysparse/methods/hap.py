"""HAP: Hessian-aware structured pruning with neural implants (Yu et al. 2022,
https://arxiv.org/abs/2101.08940), physically compacted.

Pipeline on the one loop: train (or start from ``init_from``) until ``prune_end`` epochs, then
estimate each output channel's Hessian trace (Hutchinson, averaged over shuffled batches until
``hessian_tol``), rank channels globally by I_c = Tr(H_c) * ||W_c||^2 / numel(W_c), remove the
least important ``final_sparsity`` of the channels or parameters (``prune_unit``) with
torch-pruning's dependency graph (residual couplings included; at most ``layer_cap`` of a
layer, at least one channel kept, classifier outputs kept), give the next ``implant_ratio``
band a cheap implant, fine-tune for the remaining epochs at ``finetune_lr``, and re-estimate
BatchNorm statistics at the end. The model really is smaller: params, FLOPs and measured
latency are reported on the compact model.
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from dataclasses import dataclass

import torch
from torch import nn

from raysparse.errors import ConfigError, require, require_choice
from raysparse.methods.base import MethodOptions, SparseMethod
from raysparse.methods.registry import register
from raysparse.sparsity.masks import MaskSet, prunable_weights, weight_slots
from raysparse.structured import apply_plan, channel_groups, channel_hessian_traces, group_importance, plan_pruning
from raysparse.tasks.base import call

BN_BATCHES = 50  # batches to re-estimate BatchNorm statistics after fine-tuning


@dataclass(frozen=True)
class HAPOptions(MethodOptions):
    prune_unit: str = "params"  # final_sparsity is this fraction of 'params' or of 'channels'
    layer_cap: float = 0.95  # at most this fraction of one layer's channels is removed
    implant_ratio: float = 0.0  # this share of the channels chosen for removal get an implant
    implant: str = "zero"  # 'zero' (the seed's zero-initialized 1x1 conv) or 'lowrank'
    hessian_samples: int = 4  # Rademacher vectors per batch
    hessian_tol: float = 0.01  # stop averaging batches when the total trace moves less than this
    hessian_batches: int = 16  # at most this many shuffled batches
    finetune_lr: float | None = None  # learning rate after the compaction; None: optimizer.lr

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require_choice("sparsity.prune_unit", "prune unit", self.prune_unit, ("params", "channels"))
        require(0 < self.layer_cap < 1, "sparsity.layer_cap", self.layer_cap, "(0, 1)")
        require(0 <= self.implant_ratio < 1, "sparsity.implant_ratio", self.implant_ratio, "[0, 1)")
        require_choice("sparsity.implant", "implant", self.implant, ("zero", "lowrank"))
        require(self.hessian_samples >= 1, "sparsity.hessian_samples", self.hessian_samples, "an integer >= 1")
        require(self.hessian_tol >= 0, "sparsity.hessian_tol", self.hessian_tol, "a number >= 0")
        require(self.hessian_batches >= 2, "sparsity.hessian_batches", self.hessian_batches, "an integer >= 2")
        if self.finetune_lr is not None:
            require(self.finetune_lr > 0, "sparsity.finetune_lr", self.finetune_lr, "a number > 0 or null")


@register
class HAP(SparseMethod):
    name = "hap"
    paper = "https://arxiv.org/abs/2101.08940"
    Options = HAPOptions
    # whole channels: the kept fraction of Conv/Linear weights only approximates the target, which
    # counts every parameter a removed channel takes along (BatchNorm, biases, next-layer inputs)
    density_tolerance = 0.1
    rebuilds_model = True  # its modules are replaced: a Sparsifier in a user's loop refuses it
    prunes_trained_network = True

    def attach(self, model, optimizer, *, steps_per_epoch, total_steps):
        super().attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        # the layer selection says whose output channels may go; the mask view covers every weight that
        # does a matmul, since removing a channel also shrinks the layers reading it, selected or not
        selected, dense = self.masks.weights, self.masks.dense_layers
        self.masks = MaskSet(prunable_weights(model))
        self.kept_weights = [n for n in self.masks.weights if n not in selected or n in dense]
        if self.example_input is not None:  # bound by the loop: refuse a model torch-pruning cannot cut now,
            self._compactable_groups()     # not at prune_end in the middle of a trial
        self.plan: dict | None = None
        self.restructured_epoch: int | None = None
        self.prunable_dense = sum(w.numel() for w in self.masks.weights.values())
        self.layer_sizes_dense = {n: w.numel() for n, w in self.masks.weights.items()}

    def after_optimizer_step(self, step: int) -> None:
        pass  # nothing is masked: channels are removed, not zeroed

    def on_train_start(self) -> None:
        if self.prune_end_epoch == 0:  # pruning a loaded network (init_from) before fine-tuning
            self.prune(epochs_done=0)

    def on_epoch_end(self, epoch: int) -> None:
        if epoch + 1 == self.prune_end_epoch and self.plan is None:
            self.prune(epochs_done=epoch + 1)
        if epoch + 1 == self.epochs and self.plan is not None:
            recalibrate_batchnorm(self.model, self.run_batch, self.train_batches(), BN_BATCHES)

    # ---- pruning ----------------------------------------------------------------------------
    def channel_importance(self) -> dict[str, torch.Tensor]:
        opts = self.options
        weights = prunable_weights(self.model)
        traces = channel_hessian_traces(
            self.model, self.batch_loss, self.train_batches(), samples=opts.hessian_samples, tol=opts.hessian_tol,
            max_batches=opts.hessian_batches, weights=weights, generator=torch.Generator().manual_seed(self.seed),
        )
        importance = {}
        for name, trace in traces.items():
            per_channel = weights[name].detach().cpu().flatten(1)
            importance[name] = trace * per_channel.pow(2).sum(1) / per_channel.shape[1]
        return importance

    def prune(self, epochs_done: int) -> None:
        opts = self.options
        example = self._example()
        groups = channel_groups(self.model, example, keep=self._kept_layers())
        scores = group_importance(groups, self.channel_importance())
        plan = plan_pruning(
            groups, scores, ratio=self.config.final_sparsity, unit=opts.prune_unit, layer_cap=opts.layer_cap,
            implant_ratio=opts.implant_ratio, implant_kind=opts.implant,
        ).to_dict()
        if opts.implant_ratio > 0 and plan["channels_implanted"] == 0:
            warnings.warn(
                f"sparsity.implant_ratio={opts.implant_ratio}: none of the {plan['channels_removed']} channels "
                "chosen for removal can take an implant (only plain convolutions can); the network has none",
                stacklevel=2,
            )
        self._apply(_same_on_every_rank(plan), epochs_done)

    def _apply(self, plan: dict, epochs_done: int) -> None:
        """Compact the model by ``plan`` (plain data: it is also how a resumed run rebuilds)."""
        self.summary = apply_plan(self.model, self._example(), plan)
        self.plan, self.restructured_epoch = plan, epochs_done
        self.restructured(epochs_done, lr=self.options.finetune_lr)  # the loop builds a fresh optimizer
        # a dense mask view of the compact model: density and FLOPs come from its real size
        self.masks = MaskSet(prunable_weights(self.model))

    def _example(self):
        return self.example_input()

    def _kept_layers(self) -> list[nn.Module]:
        """The classifier and the layers the selection leaves out or keeps dense: none loses an output."""
        *_, classifier = (m for m in self.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        slots = weight_slots(self.model)
        return [classifier, *(slots[name][0] for name in self.kept_weights)]

    def _compactable_groups(self) -> list:
        """The channel groups torch-pruning can remove; a ConfigError on ``sparsity.method`` when there
        are none, a warning naming what stays whole when only some can go (a transformer's attention)."""
        model, info = type(self.model).__name__, {}
        try:
            groups = channel_groups(self.model, self._example(), keep=self._kept_layers(), info=info)
        except Exception as error:  # torch-pruning's tracer fails in many ways on models it cannot follow
            raise ConfigError("sparsity.method", f"hap cannot compact {model}: torch-pruning's dependency graph "
                              f"fails on it ({type(error).__name__}: {error})") from None
        reasons = sorted({reason for _, reason in info["skipped"]})
        if not groups:
            why = f" ({'; '.join(reasons)})" if reasons else ""
            raise ConfigError("sparsity.method", f"hap finds no channels that torch-pruning can remove in {model}"
                              f"{why}; choose an unstructured method")
        self._check_compacted_model_runs(groups)
        if reasons:
            warnings.warn(f"hap removes channels from {len(groups)} of the {len(groups) + len(info['skipped'])} "
                          f"channel groups of {model}; {len(info['skipped'])} stay whole: {'; '.join(reasons)}",
                          stacklevel=3)
        return groups

    def _check_compacted_model_runs(self, groups: list) -> None:
        """A copy with a few channels removed must still run: torch-pruning follows the layers, not
        every reshape (a language model's attention splits its width into heads), so a model it
        would break is refused now, not at prune_end in the middle of a trial."""
        copy = deepcopy(self.model)
        scores = {group.id: torch.arange(group.channels, dtype=torch.float64) for group in groups}
        total = sum(group.channels for group in groups)
        plan = plan_pruning(groups, scores, ratio=min(0.5, len(groups) / total), layer_cap=0.5)
        example = self._example()
        try:
            apply_plan(copy, example, plan.to_dict())
            with torch.no_grad():
                call(copy.eval(), example)
        except Exception as error:  # whatever the broken forward raises
            raise ConfigError("sparsity.method", f"hap cannot compact {type(self.model).__name__}: with channels "
                              f"removed by torch-pruning its forward fails ({type(error).__name__}: {error}); "
                              "choose an unstructured method") from None

    # ---- reporting and checkpoints -------------------------------------------------------------
    def density(self) -> float:
        return sum(w.numel() for w in self.masks.weights.values()) / self.prunable_dense

    def layer_density(self) -> dict[str, float]:
        return {n: w.numel() / self.layer_sizes_dense.get(n, w.numel()) for n, w in self.masks.weights.items()}

    def metrics(self) -> dict[str, float]:
        """Channel counts of the plan, once it is carried out: ``channels_implanted = 0`` says that
        no implant was made even where ``implant_ratio`` asked for some."""
        if self.plan is None:
            return {}
        return {key: self.plan[key] for key in ("channels_total", "channels_removed", "channels_implanted")}

    def target_density(self) -> float:
        return 1.0 - self.config.final_sparsity if self.options.prune_unit == "params" else float("nan")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "plan": self.plan, "restructured_epoch": self.restructured_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state["plan"] is not None and self.plan is None:  # rebuild the compact structure first
            self._apply(state["plan"], state["restructured_epoch"])
        super().load_state_dict(state)


def _same_on_every_rank(plan: dict) -> dict:
    """Under DDP every rank estimates the same traces from the same batches; rank 0's plan is
    broadcast anyway, so float noise can never give two ranks different architectures."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        holder = [plan]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return plan


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, run_batch, batches, max_batches: int) -> None:
    """Re-estimate BatchNorm running statistics on training batches (cumulative average), as
    the seed does after fine-tuning: pruning shifted every layer's activation statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        run_batch(batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
