"""SparseGPT: one-shot pruning with reconstruction (Frantar & Alistarh 2023, https://arxiv.org/abs/2301.00774).

Block by block (``sequential``, the default, as in the paper: the layers of a transformer block
see the outputs of the blocks pruned before it, ``methods/sequential.py``) or else layer by layer in
the order the forward pass reaches them, the inputs of weight matrix W [rows, cols] (``weight
.flatten(1)``) over the first ``calibration_batches`` shuffled training batches, read by forward
pre-hooks in eval mode, give H = 2 X Xᵀ / n (float64; n input vectors: examples times positions; a
convolution's X is its unfolded input as in wanda, a grouped one's an H per group). Then W is
pruned *and its kept weights updated* so that W'X stays close to WX:

- an input that is always zero (H_jj = 0) gets H_jj = 1 and its weights zero (saliency 0: pruned
  first); ``percdamp`` times H's mean diagonal is added to the diagonal;
- U = the upper Cholesky factor of H⁻¹. Columns are visited left to right; pruning w_ij moves its
  error to the columns k > j of row i, w_ik -= w_ij / U_jj * U_jk: the OBS update restricted to
  the columns not visited yet (so the result is the least-squares optimum over those columns, not
  over every kept weight). Within a block of ``blocksize`` columns the update is applied column by
  column, to the columns after the block once per block (the paper's lazy batch update);
- a block's mask is chosen when the block is reached, from the weights updated so far, by the OBS
  saliency w_ij² / U_jj² compared across all rows and columns of the block (the paper's adaptive
  mask selection: rows keep different numbers). Under N:M the mask of each group of M columns is
  chosen when it is reached, keeping per row the N of highest saliency (the paper's N:M rule).

Exact counts: ``layer_targets`` gives each layer its count, honoring ``distribution``. Each
selection span (a block; M columns under N:M) keeps its share of that count by cumulative
rounding: the spans up to column c keep round(count * c / cols) between them, so a layer keeps
exactly its count (and the model exactly its budget) without any adjustment afterwards. Under N:M
a span's share is taken among each row's N best of the group (exactly N per group when the layer
is at density N/M); under a block pattern it is whole blocks of the span (the block width is
rounded to a multiple of the pattern's columns). The scores ``layer_targets`` gets are Wanda's
|W|·||X|| of the dense network (one extra calibration pass), which distributions that read scores
(``global``, ``owl``) use: the counts must be known before the first layer is reconstructed. The
others read shapes only, and get no such pass.

A weight whose input no hook sees (a Conv3d, a Linear its parent calls functionally such as
nn.MultiheadAttention's in_proj_weight) is pruned by |W| alone, without reconstruction (the
identity Hessian), and a warning names it: first on the per-layer path, with its block on the
sequential one. A layer left at full density is not touched. Under torch.distributed the Hessians
are summed over the ranks and rank 0's weights are broadcast.

Cost, ``sequential`` on a model with transformer blocks: two passes of each block over the
calibration batches (all of a block's Hessians from one; layers sharing an input, such as q, k and
v, share its X Xᵀ). Without blocks (an MLP, a CNN), or with ``sequential: false``: one full
calibration pass per pruned layer. When: as ``wanda`` (``prune_end``; ``prune_end: epochs`` gives
the pruned network without fine-tuning, as the paper evaluates it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from raysparse.errors import require
from raysparse.methods.registry import register
from raysparse.methods.sequential import from_rank0, prune_block_by_block
from raysparse.methods.wanda import Wanda, WandaOptions, unfolded_input
from raysparse.sparsity.patterns import NM, UNSTRUCTURED, Block, Pattern

_HOOKED = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class SparseGPTOptions(WandaOptions):
    sequential: bool = True  # the paper's protocol: block by block where the model has transformer blocks
    blocksize: int = 128  # columns per lazy batch update and per mask selection
    percdamp: float = 0.01  # dampening added to H's diagonal, a fraction of its mean

    def check(self, *, epochs: int) -> None:
        super().check(epochs=epochs)
        require(self.blocksize >= 1, "sparsity.blocksize", self.blocksize, "an integer >= 1")
        require(math.isfinite(self.percdamp) and self.percdamp >= 0, "sparsity.percdamp", self.percdamp,
                "a number >= 0")


@register
class SparseGPT(Wanda):  # wanda's timing and calibration batches; another way to prune
    name = "sparsegpt"
    paper = "https://arxiv.org/abs/2301.00774"
    Options = SparseGPTOptions

    def calibration_statistics(self) -> None:
        """None: each layer's Hessian sees the layers pruned before it, at the trial's own densities."""
        return None

    def prune(self, step: int) -> None:
        batches = list(self._calibration_batches())  # the same batches for every layer
        weights, dense = self.masks.weights, self.masks.dense_layers
        counts = self.layer_targets(self._allocation_scores(batches), self.target_density())
        owners = {id(m.weight): m for m in self.model.modules() if isinstance(m, _HOOKED)}
        hooked = {n: owners[id(w)] for n, w in weights.items() if id(w) in owners and n not in dense}
        todo = [n for n, w in weights.items() if n not in dense and counts[n] < w.numel()]  # the rest stay as trained
        new: dict[str, torch.Tensor] = {}
        unseen: list[str] = []

        def prune_group(names: list[str], host: nn.Module, inputs: Iterable, run: Callable) -> None:
            hessians = layer_hessians(host, {n: hooked[n] for n in names if n in hooked}, inputs, run)
            for name in names:
                self._prune_layer(name, hessians.get(name), counts[name], new, unseen)

        blocks = self._blocks(batches)
        if blocks is not None:
            prune_block_by_block(self.model, self.run_batch, batches, blocks, {n: weights[n] for n in todo},
                                 {n: hooked[n] for n in todo if n in hooked}, prune_group)
        else:
            order = execution_order(self.model, hooked, batches[:1], self.run_batch)
            # the unseen need no inputs: pruned first, the others' Hessians see them pruned
            for name in [n for n in todo if n not in order] + [n for n in order if n in todo]:
                hessian = layer_hessian(self.model, hooked[name], batches, self.run_batch) if name in order else None
                self._prune_layer(name, hessian, counts[name], new, unseen)
        if unseen:
            warnings.warn(f"sparsegpt: no input seen for {', '.join(unseen)}; pruned by |W| alone, "
                          "without reconstruction", stacklevel=2)
        self.masks.update(new, step=step, reason="sparsegpt", optimizer=self.optimizer)
        self.pruned = True

    def _prune_layer(self, name: str, hessian: torch.Tensor | None, count: int, new: dict, unseen: list) -> None:
        """SparseGPT on one weight, in place (identity Hessian where none was seen); its mask into ``new``."""
        weight = self.masks.weights[name]
        if hessian is None:
            unseen.append(name)
            hessian = torch.eye(weight[0].numel(), dtype=torch.float64, device=weight.device)
        try:
            pruned, new[name] = sparsegpt_prune(weight, hessian, count, blocksize=self.options.blocksize,
                                                percdamp=self.options.percdamp, pattern=self.pattern_of(name))
        except ValueError as err:
            raise RuntimeError(f"sparsegpt: layer {name}: {err}") from None
        with torch.no_grad():  # later layers' Hessians see this layer pruned
            weight.copy_(from_rank0(pruned))

    def _calibration_batches(self) -> Iterable:
        if self.train_batches is None:
            raise RuntimeError("sparsegpt needs calibration batches: bind(train_batches=...) before it prunes")
        return super()._calibration_batches()


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, keep_count: int | None = None, *, blocksize: int = 128,
    percdamp: float = 0.01, pattern: Pattern = UNSTRUCTURED, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one weight (the module docstring says how): ``(new_weight, mask)`` shaped as
    ``weight``, exactly ``keep_count`` kept (whole blocks under a block pattern: round(count /
    block size) of them), pruned weights exactly zero. ``hessian`` is [cols, cols] against
    ``weight.flatten(1)``, or [groups, cols, cols] for the row groups of a grouped convolution;
    float64 computes in float64, anything else in float32. Given ``mask`` instead of a count, the
    mask is kept and only the weights are reconstructed."""
    if (keep_count is None) == (mask is None):
        raise ValueError("give keep_count or mask, one of them")
    matrix = weight.detach().flatten(1)
    rows, cols = matrix.shape
    dtype = torch.float64 if hessian.dtype == torch.float64 else torch.float32
    h = hessian.detach().to(device=matrix.device, dtype=dtype).clone()
    h = h[None] if h.ndim == 2 else h
    groups = h.shape[0]
    if h.shape[1:] != (cols, cols) or rows % groups or not pattern.fits(matrix.shape):
        raise ValueError(f"hessian {list(hessian.shape)} or pattern {pattern.name!r} does not fit weight "
                         f"{list(weight.shape)}")
    w = matrix.to(dtype).clone().view(groups, rows // groups, cols)
    diagonal = h.diagonal(dim1=1, dim2=2)
    dead = diagonal == 0
    diagonal[dead] = 1.0
    w.masked_fill_(dead[:, None, :], 0.0)
    diagonal += percdamp * diagonal.mean(1, keepdim=True)
    u = _upper_cholesky_of_inverse(h, percdamp)
    d = u.diagonal(dim1=1, dim2=2)[:, None, :]  # [groups, 1, cols]
    if mask is not None:
        keep = mask.detach().flatten(1).to(device=w.device, dtype=torch.bool).view_as(w).clone()
    else:
        keep = torch.zeros_like(w, dtype=torch.bool)
        capacity = round(rows * cols * pattern.max_density)
        units = round(min(max(int(keep_count), 0), capacity) / pattern.unit)

        def share(c: int) -> int:  # pattern units kept in the columns before c, rounded half up
            return (2 * units * c + cols) // (2 * cols)
    width, span = _widths(pattern, blocksize)
    for start in range(0, cols, width):
        end = min(start + width, cols)
        block, errors = w[..., start:end].clone(), torch.zeros_like(w[..., start:end])
        inverse = u[:, start:end, start:end]
        for j in range(end - start):
            if mask is None and j % span == 0:  # this span's mask, from the weights updated so far
                a, b = start + j, min(start + j + span, end)
                saliency = (block[..., j:j + b - a] / d[..., a:b]).square().reshape(rows, b - a)
                chosen = pattern.select(saliency, torch.ones_like(saliency, dtype=torch.bool),
                                        (share(b) - share(a)) * pattern.unit)
                keep[..., a:b] = chosen.view(groups, -1, b - a)
            error = torch.where(keep[..., start + j], 0.0, block[..., j]) / inverse[:, j, j, None]
            block[..., j:] -= error[..., None] * inverse[:, None, j, j:]
            errors[..., j] = error
        w[..., start:end] = block
        w[..., end:] -= errors @ u[:, start:end, end:]  # the lazy update of the columns after the block
    w.masked_fill_(~keep, 0.0)  # exact zeros where the update left rounding residue
    return w.reshape(weight.shape).to(weight.dtype), keep.reshape(weight.shape)


def _upper_cholesky_of_inverse(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    lower, info = torch.linalg.cholesky_ex(h)
    if not bool((info == 0).all()):
        raise ValueError(f"its Hessian is not positive definite at percdamp={percdamp}; "
                         "a larger sparsity.percdamp makes it so")
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def _widths(pattern: Pattern, blocksize: int) -> tuple[int, int]:
    """(lazy block width, mask selection span): a block holds whole N:M groups or pattern blocks."""
    period = pattern.m if isinstance(pattern, NM) else pattern.cols if isinstance(pattern, Block) else 1
    width = max(period, blocksize // period * period)
    return width, period if isinstance(pattern, NM) else width


def execution_order(model: nn.Module, hooked: dict[str, nn.Module], batches: Iterable, run: Callable) -> list[str]:
    """The names of ``hooked`` in the order the forward pass first calls their modules (those it
    never calls left out)."""
    order: list[str] = []

    def recorder(name: str):
        def hook(module, args):
            if name not in order:
                order.append(name)
        return hook

    _run_hooked(model, {n: (m, recorder(n)) for n, m in hooked.items()}, batches, run)
    return order


def layer_hessian(model: nn.Module, module: nn.Module, batches: Iterable, run: Callable) -> torch.Tensor | None:
    """H = 2 X Xᵀ / n of ``module``'s inputs over ``batches`` (float64): [cols, cols], or [groups,
    cols, cols] for a grouped convolution; summed over the ranks under torch.distributed. None
    where the module saw no input."""
    return layer_hessians(model, {"": module}, batches, run)[""]


def layer_hessians(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable,
                   run: Callable) -> dict[str, torch.Tensor | None]:
    """``layer_hessian`` of each of ``modules`` from the same passes of ``run`` over ``batches``."""
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    last: list = [None, None, 0]  # the last Linear input and its X Xᵀ: q, k, v (gate, up) share theirs

    def accumulate(name: str, module: nn.Module):
        groups, cols, device = getattr(module, "groups", 1), module.weight[0].numel(), module.weight.device
        total = torch.zeros(groups, cols, cols, dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.float64, device=device)
        sums[name] = total, count

        def hook(module, args):
            linear = isinstance(module, nn.Linear)
            if linear and last[0] is args[0]:
                product, n = last[1], last[2]
            else:
                x = input_columns(module, args[0]).double()  # [n, groups, cols]
                product, n = torch.einsum("ngi,ngj->gij", x, x), x.shape[0]
                if linear:
                    last[:] = args[0], product, n
            total.add_(product)
            count.add_(n)
        return hook

    try:
        _run_hooked(model, {n: (m, accumulate(n, m)) for n, m in modules.items()}, batches, run)
    finally:
        last[:] = None, None, 0
    hessians: dict[str, torch.Tensor | None] = {}
    dist = torch.distributed
    for name, (total, count) in sums.items():
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        hessian = 2 * total / count if count > 0 else None
        hessians[name] = hessian[0] if hessian is not None and len(hessian) == 1 else hessian
    return hessians


def input_columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input vectors ``module.weight.flatten(1)`` multiplies, [n, groups, cols]: a Linear's
    inputs over every leading dimension, a convolution's unfolded input (padded as it pads)."""
    x = x.detach()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, 1, x.shape[-1])
    columns = unfolded_input(module, x)  # [batch, in_channels * kernel, positions]
    return columns.transpose(1, 2).reshape(-1, module.groups, columns.shape[1] // module.groups)


@torch.no_grad()
def _run_hooked(model: nn.Module, hooks: dict[str, tuple[nn.Module, Callable]], batches: Iterable,
                run: Callable) -> None:
    handles = [module.register_forward_pre_hook(hook) for module, hook in hooks.values()]
    was_training = model.training
    model.eval()  # BatchNorm's running statistics and dropout stay as they are
    try:
        for batch in batches:
            run(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
