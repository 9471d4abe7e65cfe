"""Measured inference latency: what a pruned model really costs on this machine (FLOPs are not
latency: Torch-Pruning #382)."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raysparse.tasks.base import call

LATENCY_BATCHES = (1, 64)  # one request, and a batch of them (a prefill of 64 sequences for a language model)


def inference_model(model: nn.Module) -> nn.Module:
    """The model as it would be deployed: eval mode, BatchNorm folded into the convolution
    before it (torch.fx). Falls back to the model itself when it cannot be traced."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception:  # untraceable control flow: measure the eager model instead
        return model


@torch.no_grad()
def measure_latency(
    model: nn.Module, inputs: Any, *, device: torch.device,
    repeats: int = 10, warmup: int = 3, budget_seconds: float = 2.0,
) -> float:
    """Median milliseconds of one forward pass of ``inputs`` (a batch of model inputs on
    ``device``), in eval mode (pass ``inference_model(model)`` to time the deployed form).

    Stops early once ``budget_seconds`` are spent (at least 3 timed runs), so a large model
    does not hold a training run up for long.
    """
    was_training = model.training
    model.eval()
    for _ in range(warmup):
        call(model, inputs)
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        call(model, inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - begin) * 1e3)
        if len(times) >= 3 and time.perf_counter() - started > budget_seconds:
            break
    model.train(was_training)
    return statistics.median(times)


# reported once, in the last report: the trained network's deployed form
DEPLOYED_METRICS = ("latency_ms_b1", "latency_ms_b64", "deployed_sparse_layers_b1", "deployed_sparse_layers_b64")


def deployed_latency(model: nn.Module, example: Callable[[int], Any], *, device: torch.device) -> dict[str, float]:
    """``latency_ms_b1`` / ``latency_ms_b64`` of ``model`` deployed for each batch size
    (``raysparse.deploy``: a sparse kernel where it pays), and how many layers run sparse.
    ``example(batch)``: a model input of that many real examples (a tensor: deploy plans on it)."""
    from raysparse.deployment import deploy

    figures: dict[str, float] = {}
    for batch in LATENCY_BATCHES:
        inputs = example(batch)
        deployed = deploy(model, inputs)
        figures[f"latency_ms_b{batch}"] = measure_latency(deployed, inputs, device=device)
        figures[f"deployed_sparse_layers_b{batch}"] = deployed.plan.sparse_layers()
    return figures


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
