"""Scores that rank weights, and the top-k that turns a score into a mask of exact size."""

from __future__ import annotations

from collections.abc import Callable

import torch

Score = Callable[[torch.Tensor, torch.optim.Optimizer | None, torch.Generator], torch.Tensor]


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs()


def gradient_score(weight, optimizer, generator) -> torch.Tensor:
    """|dL/dW| of the current batch (dense: pruned positions get gradients too)."""
    if weight.grad is None:
        raise RuntimeError("growth by gradient needs a gradient; call after backward()")
    return weight.grad.detach().abs()


def momentum_score(weight, optimizer, generator) -> torch.Tensor:
    """|momentum| (SNFS, Dettmers & Zettlemoyer 2019); falls back to |grad| before the first
    optimizer step or for optimizers without a momentum buffer."""
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    buf = state.get("momentum_buffer", state.get("exp_avg"))
    if buf is None:
        return gradient_score(weight, optimizer, generator)
    return buf.detach().abs()


def random_score(weight, optimizer, generator) -> torch.Tensor:
    """Uniform random scores drawn from the method's generator (SET)."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


GROWTH_SCORES: dict[str, Score] = {
    "gradient": gradient_score,
    "momentum": momentum_score,
    "random": random_score,
}


def topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask with exactly ``k`` True entries at the highest scores."""
    return keep_top(score, torch.ones_like(score, dtype=torch.bool), k)


def keep_top(score: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly ``k`` of the ``candidates`` (bool), those with the highest score."""
    n_candidates = int(candidates.sum())
    k = max(0, min(int(k), n_candidates))
    score = score.float()
    if k <= n_candidates // 2:
        chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        if k:
            ranked = torch.where(candidates, score, -torch.inf).flatten()
            chosen[torch.topk(ranked, k, sorted=False).indices] = True
        return chosen.view_as(candidates)
    # keeping most candidates: find the few to leave out instead (topk is slow for large k)
    chosen = candidates.clone().flatten()
    if n_candidates - k:
        ranked = torch.where(candidates, score, torch.inf).flatten()
        chosen[torch.topk(ranked, n_candidates - k, largest=False, sorted=False).indices] = False
    return chosen.view_as(candidates)
