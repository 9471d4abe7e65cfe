"""Cost metrics: FLOPs of one forward pass, in total, per layer, and with the masks applied.
(A task evaluates its own metrics: ``raysparse.tasks``.)"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from raysparse.tasks.base import call


def layer_flops(model: nn.Module, example: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward pass of ``example`` (a model input of one example, on the model's
    device: a tensor, or a dict of keyword tensors) (torch.utils.flop_counter), in total and per
    module name, plus per attention weight by mask name (``...self_attn.in_proj_weight``,
    ``...self_attn.out_proj``). A multiply-add counts as 2 FLOPs, as FlopCounterMode counts them."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping={_CPU_FLASH_ATTENTION: _attention_flops})
    attention: dict[str, int] = {}
    hooks = [
        module.register_forward_pre_hook(partial(_count_projections, name, attention), with_kwargs=True)
        for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)
    ]
    # with grad enabled: under no_grad, nn.MultiheadAttention and nn.TransformerEncoderLayer take fused
    # fast paths whose ops FlopCounterMode does not know, and a transformer would count 0 FLOPs
    try:
        with torch.enable_grad(), counter:
            call(model, example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    per_module = counter.get_flop_counts()
    total = int(sum(per_module.get("Global", {}).values()))
    root = type(model).__name__  # FlopCounterMode names modules "<RootClass>.<qualified name>"
    by_layer = {
        name: int(sum(per_module[f"{root}.{name}"].values()))
        for name, _ in model.named_modules()
        if name and f"{root}.{name}" in per_module
    }
    return total, {**by_layer, **attention}


def _count_projections(name: str, flops: dict[str, int], module: nn.MultiheadAttention, args, kwargs) -> None:
    """FLOPs of an attention module's projection weights, from the tokens they project.

    Counted here, not by FlopCounterMode: the module computes ``out_proj`` (and the q/k/v
    projections) inside its own forward, so their FLOPs only show as the whole module's.
    """
    roles = ("query", "key", "value")
    inputs = dict(zip(roles, args)) | {role: kwargs[role] for role in roles if role in kwargs}
    tokens = {role: tensor.numel() // tensor.shape[-1] for role, tensor in inputs.items()}  # batch x sequence
    counts = {"out_proj": module.out_proj.weight.numel() * tokens["query"]}
    if module.in_proj_weight is not None:  # rows [0, E) project the query, [E, 2E) the key, [2E, 3E) the value
        counts["in_proj_weight"] = module.in_proj_weight.numel() // 3 * sum(tokens.values())
    else:
        for role in ("query", "key", "value"):
            counts[f"{role[0]}_proj_weight"] = getattr(module, f"{role[0]}_proj_weight").numel() * tokens[role]
    for attribute, multiply_adds in counts.items():  # summed: a module may be called more than once
        key = f"{name}.{attribute}" if name else attribute
        flops[key] = flops.get(key, 0) + 2 * multiply_adds


# torch's flop counter has formulas for the CUDA attention kernels, not for this CPU one
_CPU_FLASH_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def sparse_flops(dense_total: int, by_layer: dict[str, int], layer_density: dict[str, float]) -> int:
    """FLOPs left when each masked layer only computes its kept weights (what a sparse kernel
    would do; dense kernels on masked weights still pay ``dense_total``)."""
    saved = sum(by_layer.get(name, 0) * (1.0 - d) for name, d in layer_density.items())
    return round(dense_total - saved)
