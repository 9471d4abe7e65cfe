"""Measured inference latency: what a pruned model really costs on this machine (FLOPs are not
latency: Torch-Pruning #382)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], *, batch: int, device: torch.device,
    repeats: int = 10, warmup: int = 3, budget_seconds: float = 2.0,
) -> float:
    """Median milliseconds of one forward pass of ``batch`` examples, in eval mode.

    Stops early once ``budget_seconds`` are spent (at least 3 timed runs), so a large model
    does not hold a training run up for long.
    """
    was_training = model.training
    model.eval()
    x = torch.randn(batch, *input_shape, device=device)
    for _ in range(warmup):
        model(x)
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - begin) * 1e3)
        if len(times) >= 3 and time.perf_counter() - started > budget_seconds:
            break
    model.train(was_training)
    return statistics.median(times)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
