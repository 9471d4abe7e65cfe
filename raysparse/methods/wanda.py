"""Wanda: pruning by weights and activations (Sun et al. 2023, https://arxiv.org/abs/2306.11695).

Weight W_ij (row i an output, column j an input of ``weight.flatten(1)``) scores
|W_ij| * ||X_j||_2, X_j being input feature j over every example (and position) of the first
``calibration_batches`` shuffled training batches, read by forward pre-hooks with the model in
eval mode. Scores are compared per output row, as in the paper: each row of a layer keeps the
same number of weights (where the layer's count does not divide by its rows, the rows whose next
score is highest keep one more). How many a layer keeps follows ``distribution`` as for every
method: ``uniform`` is the paper's rule, ``erk`` etc. allocate as elsewhere, ``global`` ranks the
scores across layers as they are.

Convolutions: column j of a Conv2d's ``weight.flatten(1)`` is (input channel c, kernel offset
u, v) in that order, which is the order of ``F.unfold``'s rows. So the input is padded as the
convolution pads it and unfolded with its kernel, dilation and stride; ||X_j|| then runs over
examples and output positions, the entries that weight column j multiplies. A grouped
convolution's row takes the norms of its own group's channels; a Conv1d is unfolded as a Conv2d
of height 1. A weight whose input no hook sees (a Conv3d, a Linear its parent calls functionally,
such as nn.MultiheadAttention's out_proj) is scored by |W| alone, and a warning names it.

Under ``sparsity.pattern``: N:M keeps the per-row comparison among the N best of each group of M
(the paper's own N:M rule); a block spans several rows, so blocks (ranked by their summed score)
are compared across the layer.

``sequential: true`` prunes a model with transformer blocks block by block, as the paper's released
code does on LLMs (``methods/sequential.py``): each block's norms come from its inputs with the
blocks before it already pruned, at the cost of two passes of each block over the calibration
batches, plus one dense pass for the distributions that read scores (``global``, ``owl``: the
counts are allocated from the dense network's scores first). The default, false, takes every norm
from one pass of the dense network (the paper's description, and how our earlier results were
made); it is also what a model without transformer blocks gets.

When: dense training for ``prune_end`` epochs (default half of training), one pruning step, then
fine-tuning for the remaining epochs, like ``oneshot``. ``prune_end: 0`` prunes before the first
step: with ``init_from`` that is post-training pruning of a loaded network; ``prune_end`` equal to
``epochs`` prunes after the last step, so the final report is the pruned network as the paper
evaluates it, without fine-tuning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raysparse.errors import require
from raysparse.methods.base import MethodOptions, SparseMethod
from raysparse.methods.registry import register
from raysparse.methods.sequential import chain_problem, from_rank0, prune_block_by_block, transformer_blocks
from raysparse.sparsity.distributions import READS_SCORES
from raysparse.sparsity.patterns import Block, Pattern, Unstructured


@dataclass(frozen=True)
class WandaOptions(MethodOptions):
    sequential: bool = False  # block by block, each block's norms with the blocks before it pruned
    calibration_batches: int = 8  # shuffled training batches whose inputs give ||X_j||

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require(self.calibration_batches >= 1, "sparsity.calibration_batches", self.calibration_batches,
                "an integer >= 1")


@register
class Wanda(SparseMethod):
    name = "wanda"
    paper = "https://arxiv.org/abs/2306.11695"
    Options = WandaOptions
    takes_pattern = True  # N:M: per row among each group's N best; blocks: across the layer
    prunes_trained_network = True
    prunes_without_training = True
    activation_scores = True  # its |W| * ||X||: 'owl' counts their outliers

    def init_masks(self) -> None:
        self.pruned = False

    def on_train_start(self) -> None:
        if self.prune_end_step == 0:  # a loaded network (init_from), pruned before any step
            self.prune(step=0)

    def update_masks(self, step: int) -> None:
        if not self.pruned and step + 1 >= self.prune_end_step:
            self.prune(step=step + 1)  # prune_end_step optimizer steps are done: the masks hold from the next

    def calibration_statistics(self) -> dict[str, dict[str, torch.Tensor | None]] | None:
        """The dense network's input norms and each row's order of scores (what ``keep_per_row``
        sorts: most of a trial's pruning time on an LLM); none to share where each trial's depend
        on its own pruning (``sequential`` on a model with transformer blocks)."""
        if self.options.sequential and transformer_blocks(self.model) is not None:
            return None
        norms = input_norms(self.model, self.masks.weights, self._calibration_batches(), run=self.run_batch)
        return {"norms": norms,
                "row_order": {n: row_order(wanda_score(w, norms[n])) for n, w in self.masks.weights.items()}}

    def prune(self, step: int) -> None:
        weights, dense = self.masks.weights, self.masks.dense_layers
        shared = self.shared_statistics or {}
        batches = [] if shared else list(self._calibration_batches())
        blocks = self._blocks(batches) if batches else None
        if blocks is None:  # every norm from one pass of the dense network (or a sweep's shared one)
            norms = shared["norms"] if shared else input_norms(self.model, weights, batches, run=self.run_batch)
            scores = {n: wanda_score(w, norms[n]) for n, w in weights.items()}
            counts = self.layer_targets(scores, self.target_density())
            orders = shared.get("row_order", {})
            new = {n: keep_per_row_under(self.pattern_of(n), s, counts[n], orders.get(n))
                   for n, s in scores.items() if n not in dense}
            unseen = [n for n in new if norms[n] is None]
        else:
            new, unseen = self._prune_block_by_block(blocks, batches)
        if unseen:
            warnings.warn(f"wanda: no input seen for {', '.join(unseen)}; pruned by |W| alone", stacklevel=2)
        self.masks.update(new, step=step, reason="wanda", optimizer=self.optimizer)
        self.pruned = True

    def _prune_block_by_block(self, blocks: nn.ModuleList, batches: list) -> tuple[dict, list[str]]:
        weights = {n: w for n, w in self.masks.weights.items() if n not in self.masks.dense_layers}
        counts = self.layer_targets(self._allocation_scores(batches), self.target_density())
        owners = {id(m.weight): m for m in self.model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
        new: dict[str, torch.Tensor] = {}
        unseen: list[str] = []

        def prune_group(names: list[str], host: nn.Module, inputs: Iterable, run: Callable) -> None:
            norms = input_norms(host, {n: weights[n] for n in names}, inputs, run=run)
            for name in names:
                unseen.extend([name] if norms[name] is None else [])
                mask = keep_per_row_under(self.pattern_of(name), wanda_score(weights[name], norms[name]), counts[name])
                new[name] = from_rank0(mask)
                weights[name].masked_fill_(~new[name], 0.0)  # the next blocks see this layer pruned

        prune_block_by_block(self.model, self.run_batch, batches, blocks, weights,
                             {n: owners[id(w)] for n, w in weights.items() if id(w) in owners}, prune_group)
        return new, unseen

    def _blocks(self, batches: list) -> nn.ModuleList | None:
        """The transformer blocks to prune one after another (``sequential``), or None."""
        found = transformer_blocks(self.model) if self.options.sequential else None
        if found is None:
            return None
        blocks, name = found
        problem = chain_problem(self.model, self.run_batch, batches[0], blocks)
        if problem is not None:
            warnings.warn(f"{self.name}: {name} cannot be pruned block by block: {problem}; pruning as with "
                          "sequential: false", stacklevel=3)
            return None
        return blocks

    def _allocation_scores(self, batches: list) -> dict[str, torch.Tensor]:
        """Wanda's |W|·||X|| of the dense network where the distribution reads scores ('global'
        ranks them, 'owl' counts their outliers); the weights, whose shapes are read, else."""
        if self.config.distribution not in READS_SCORES:
            return {n: w.detach() for n, w in self.masks.weights.items()}
        norms = input_norms(self.model, self.masks.weights, batches, run=self.run_batch)
        return {n: wanda_score(w, norms[n]) for n, w in self.masks.weights.items()}

    def _calibration_batches(self) -> Iterable:
        if self.train_batches is None:
            raise RuntimeError("wanda needs calibration batches: bind(train_batches=...) before it prunes")
        for i, batch in enumerate(self.train_batches()):
            if i >= self.options.calibration_batches:
                break
            yield batch

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pruned": self.pruned}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.pruned = bool(state["pruned"])


def wanda_score(weight: torch.Tensor, norms: torch.Tensor | None) -> torch.Tensor:
    """|W_ij| * ||X_j||, shaped as ``weight``; |W| where no input norms were seen."""
    magnitude = weight.detach().abs()
    if norms is None:
        return magnitude
    return (magnitude.flatten(1) * norms.to(magnitude.dtype)).view_as(magnitude)


@torch.no_grad()
def input_norms(
    model: nn.Module, weights: dict[str, torch.Tensor], inputs: Iterable, run: Callable | None = None,
) -> dict[str, torch.Tensor | None]:
    """||X_j||_2 per weight, shaped ``[rows or 1, columns]`` against ``weight.flatten(1)``; None
    where no forward pass of a Linear/Conv1d/Conv2d owning the weight saw an input. ``run(input)``
    makes the forward pass (default: ``model(input)``; a task's batch of any form: the task's)."""
    owners = {id(m.weight): m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    squares: dict[str, torch.Tensor] = {}

    def accumulate_into(name: str):
        def hook(module, args):
            column_squares = _column_squares(module, args[0])
            squares[name] = squares[name] + column_squares if name in squares else column_squares
        return hook

    hooked = {n: owners[id(w)] for n, w in weights.items() if id(w) in owners}
    handles = [module.register_forward_pre_hook(accumulate_into(n)) for n, module in hooked.items()]
    was_training = model.training
    model.eval()  # BatchNorm's running statistics and dropout stay as they are
    try:
        for x in inputs:
            (run or model)(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {n: squares[n].sqrt() if n in squares else None for n in weights}


def _column_squares(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum of squares of each input column that ``module.weight.flatten(1)`` multiplies."""
    x = x.detach().float()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]).square().sum(0, keepdim=True)
    per_column = unfolded_input(module, x).square().sum((0, 2))
    groups, rows = module.groups, module.out_channels
    return per_column.view(groups, -1).repeat_interleave(rows // groups, dim=0) if groups > 1 else per_column[None]


def unfolded_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d/Conv2d's input as the columns its ``weight.flatten(1)`` multiplies, [batch,
    in_channels * kernel, positions]: padded as the convolution pads, unfolded with its kernel,
    dilation and stride (a Conv1d as a Conv2d of height 1)."""
    padding = module._reversed_padding_repeated_twice  # the amounts for every padding spelling ('same' too)
    if any(padding):
        x = F.pad(x, padding, mode="constant" if module.padding_mode == "zeros" else module.padding_mode)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if isinstance(module, nn.Conv1d):  # a Conv2d of height 1
        x, kernel, dilation, stride = x.unsqueeze(2), (1, *kernel), (1, *dilation), (1, *stride)
    return F.unfold(x, kernel, dilation=dilation, stride=stride)


def keep_per_row_under(pattern: Pattern, score: torch.Tensor, count: int,
                       order: torch.Tensor | None = None) -> torch.Tensor:
    """``keep_per_row`` among the weights ``pattern`` allows; whole blocks across the layer for a
    block pattern. The count is at most what the pattern holds (``layer_targets`` caps it).
    ``order``: ``row_order(score)`` where already known (used without a pattern only)."""
    everything = torch.ones_like(score, dtype=torch.bool)
    if isinstance(pattern, Block):
        return pattern.select(score, everything, count)
    if isinstance(pattern, Unstructured):
        return keep_per_row(score, count, order)
    return keep_per_row(score.masked_fill(~pattern.eligible(score, everything), -torch.inf), count)


def row_order(score: torch.Tensor) -> torch.Tensor:
    """Each row's columns of ``score.flatten(1)`` from highest score to lowest (ties: lower column
    first), int16 where the columns fit."""
    order = torch.argsort(score.detach().flatten(1).float(), dim=1, descending=True, stable=True)
    return order.to(torch.int16) if order.shape[1] <= torch.iinfo(torch.int16).max else order


def keep_per_row(score: torch.Tensor, count: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly ``count`` True entries, as evenly spread over the rows of ``score.flatten(1)`` as
    they divide: each row keeps its ``count // rows`` best, and the ``count % rows`` rows whose
    next-best score is highest keep one more. ``order``: ``row_order(score)``, if known."""
    rows = score.detach().flatten(1).float()
    n_rows, n_columns = rows.shape
    each, extra = divmod(max(0, min(int(count), rows.numel())), n_rows)
    order = row_order(score).long() if order is None else order.long()
    keep = torch.full((n_rows,), each, device=rows.device)
    if extra:
        next_best = rows.gather(1, order[:, each:each + 1]).squeeze(1)
        keep[torch.argsort(next_best, descending=True, stable=True)[:extra]] += 1
    kept_place = torch.arange(n_columns, device=rows.device)[None, :] < keep[:, None]  # the j-th best is kept
    mask = torch.empty((n_rows, n_columns), dtype=torch.bool, device=rows.device)
    return mask.scatter_(1, order, kept_place).view_as(score)
