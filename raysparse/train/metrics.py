"""Evaluation and cost metrics: accuracy, loss, FLOPs of one forward pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over a loader; the model is left in eval mode."""
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        total += y.numel()
    if total == 0:
        return float("nan"), float("nan")
    return correct / total, loss_sum / total


@torch.no_grad()
def layer_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass of one example (torch.utils.flop_counter), in total and per
    module name. A multiply-add counts as 2 FLOPs, as FlopCounterMode counts them."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    per_module = counter.get_flop_counts()
    total = int(sum(per_module.get("Global", {}).values()))
    root = type(model).__name__  # FlopCounterMode names modules "<RootClass>.<qualified name>"
    by_layer = {
        name: int(sum(per_module[f"{root}.{name}"].values()))
        for name, _ in model.named_modules()
        if name and f"{root}.{name}" in per_module
    }
    return total, by_layer


def sparse_flops(dense_total: int, by_layer: dict[str, int], layer_density: dict[str, float]) -> int:
    """FLOPs left when each masked layer only computes its kept weights (what a sparse kernel
    would do; dense kernels on masked weights still pay ``dense_total``)."""
    saved = sum(by_layer.get(name, 0) * (1.0 - d) for name, d in layer_density.items())
    return round(dense_total - saved)
