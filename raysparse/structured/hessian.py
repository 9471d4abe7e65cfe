"""Per-output-channel Hessian traces by Hutchinson's estimator: the channel sensitivity HAP prunes by.

HAP: Yu et al., "Hessian-Aware Pruning and Optimal Neural Implant", https://arxiv.org/abs/2101.08940
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from raysparse.sparsity.masks import prunable_weights


def channel_hessian_traces(
    model: nn.Module,
    batch_loss: Callable[[object], torch.Tensor],
    batches: Iterable,
    *,
    samples: int = 4,
    tol: float = 0.01,
    min_batches: int = 2,
    max_batches: int | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    info: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Estimate trace(H_cc), the Hessian block of each output channel c (dim 0) of each weight.

    For Rademacher vectors v over all weights at once, ``T_c = sum_{i in c} v_i (Hv)_i`` is unbiased
    for trace(H_cc): the off-diagonal terms have zero mean. Hv comes from double back-propagation,
    one forward/backward per batch and ``samples`` Hessian-vector products reusing its graph.

    The seed code used one fixed batch; here the running mean runs over every (batch, sample) draw,
    and after each batch, once ``min_batches`` are done, estimation stops when the summed trace
    changed by less than ``tol`` (relative) since the previous batch. It also stops at
    ``max_batches`` or when ``batches`` runs out; the caller shuffles. Comparing needs two estimates,
    so at least two batches are used when there are two.

    ``batch_loss(batch)`` is the mean loss of one batch (the task's, on the model's device).
    ``weights`` defaults to :func:`prunable_weights` (keys like ``layer1.0.conv1``). The model is in
    eval mode meanwhile (BatchNorm statistics stay put) and every module's mode is restored after.
    If ``info`` is a dict, it receives ``batches`` and ``draws`` (= batches * samples) used.
    Returns ``{name: float32 CPU tensor of length out_channels}``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got samples={samples}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got tol={tol}")
    if min_batches < 1:
        raise ValueError(f"min_batches must be >= 1, got min_batches={min_batches}")
    if max_batches is not None and max_batches < min_batches:
        raise ValueError(f"max_batches must be >= min_batches={min_batches}, got max_batches={max_batches}")
    weights = dict(prunable_weights(model) if weights is None else weights)
    if not weights:
        raise ValueError("no weights to estimate: the model has no weight that does a matmul and none were given")
    frozen = [name for name, w in weights.items() if not w.requires_grad]
    if frozen:
        raise ValueError(f"weights without requires_grad have no Hessian: {', '.join(frozen)}")

    names, params = list(weights), list(weights.values())
    device = params[0].device
    # float64 sums: thousands of noisy draws of mixed sign are averaged
    sums = {name: torch.zeros(w.shape[0], dtype=torch.float64, device=device) for name, w in weights.items()}
    draws, used, previous_total = 0, 0, None
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        for batch in batches:
            with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
                loss = batch_loss(batch)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            for draw in range(samples):
                vectors = [_rademacher(w, generator) for w in params]
                hvps = _hessian_vector_products(grads, params, vectors, retain_graph=draw < samples - 1)
                for name, v, hv in zip(names, vectors, hvps):
                    sums[name] += (v * hv).reshape(v.shape[0], -1).sum(1, dtype=torch.float64)
                draws += 1
            del loss, grads  # free this batch's graph before the next forward
            used += 1
            total = sum(s.sum() for s in sums.values()).item() / draws
            if used >= min_batches and previous_total is not None:
                if abs(total - previous_total) < tol * abs(previous_total):
                    break
            if max_batches is not None and used >= max_batches:
                break
            previous_total = total
    finally:
        for module, training in modes.items():
            module.train(training)
    if used == 0:
        raise ValueError("batches is empty: at least one (x, y) batch is needed")
    if info is not None:
        info.update(batches=used, draws=draws)
    return {name: (s / draws).float().cpu() for name, s in sums.items()}


def _rademacher(weight: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # drawn on the generator's device, so a CPU generator reproduces the same vectors on any model device
    draw_device = generator.device if generator is not None else torch.device("cpu")
    bits = torch.randint(0, 2, weight.shape, generator=generator, device=draw_device)
    return (bits * 2 - 1).to(device=weight.device, dtype=weight.dtype)


def _hessian_vector_products(grads, params, vectors, *, retain_graph: bool) -> list[torch.Tensor]:
    # a weight the loss ignores (or is linear in) has no second-order graph: its Hv is zero
    dot = sum((g * v).sum() for g, v in zip(grads, vectors) if g is not None and g.requires_grad)
    if not isinstance(dot, torch.Tensor):
        return [torch.zeros_like(p) for p in params]
    hvps = torch.autograd.grad(dot, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if hv is None else hv.detach() for p, hv in zip(params, hvps)]
