"""``deploy``: the masked network on the fastest kernel per layer, measured on this machine.

For every weight that does a matmul, the dense layer and each sparse kernel that fits it (CSR;
BSR where the zeros come in square blocks; im2col + CSR for a convolution; 2:4 on a GPU that has
it) are timed against each other, interleaved, on the layer's real input at the deployment batch
size (captured by forward hooks on the example: every token of a language model's
``[batch, seq, width]``). A sparse kernel replaces the layer only where it
is clearly faster; last, the whole network is timed against the dense one and every choice is
undone if, together, they are not clearly faster (by the same margin as a layer).
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from raysparse.deployment.attention import DeployedAttention, SubmoduleEncoderLayer
from raysparse.deployment.kernels import (
    SemiStructuredLinear,
    SparseLinear,
    UnfoldConv2d,
    is_two_four,
    semi_structured_available,
    square_block_size,
)
from raysparse.deployment.model import DeployedModel
from raysparse.deployment.plan import DENSE, Plan, PlanRow
from raysparse.deployment.timing import time_interleaved
from raysparse.sparsity.masks import weight_slots
from raysparse.structured.fold import fold_batchnorm
from raysparse.tasks.base import batch_size_of, call

# what a model is called with: a tensor (images, token ids), or keyword tensors (an HF model's
# input_ids and attention_mask)
ModelInput = torch.Tensor | Mapping[str, torch.Tensor]

# CSR stores an index per value and reads the input irregularly: above half density it cannot
# beat a dense GEMM, so such layers are not even timed
MAX_TIMED_DENSITY = 0.5
# a sparse kernel must take at most this fraction of the dense layer's time: a near tie is noise,
# and the dense layer is the safe choice
SPARSE_MARGIN = 0.95
SEMI_STRUCTURED = "semi-structured-2:4"


def deploy(model: nn.Module, example_input: ModelInput, *, batch_size: int | None = None) -> DeployedModel:
    """``model`` (eval mode, masks in its weights, BatchNorm folded into the convolutions) with each
    layer on the fastest of dense and sparse kernels at ``batch_size`` (default: the example's
    batch), timed here. ``example_input`` is real input (float images, a LongTensor of token ids,
    or a dict of keyword tensors such as ``input_ids``): its examples are repeated to ``batch_size``.
    Its outputs equal the masked dense model's within float tolerance;
    ``.plan`` says what was chosen and measured (``print(deployed.plan)``). Save it with
    ``raysparse.deployment.save_deployed(deployed, path, model=..., data_info=...)`` (the config
    block and data info that built ``model``) and load it with ``raysparse.load_deployed(path)``:
    the file holds weights, plan and that spec, no pickled classes."""
    return build_deployed(model, example_input, batch_size=batch_size)


@torch.no_grad()
def build_deployed(model: nn.Module, example_input: ModelInput, *, batch_size: int | None = None,
                   kernels: dict[str, str] | None = None) -> DeployedModel:
    """``deploy``, where ``kernels`` (fnmatch pattern on the layer name -> kernel) forces the kernel
    of the layers it names that can take it, untimed (tests run every kernel path this way)."""
    _refuse_parametrized(model)
    dense = fold_batchnorm(model).requires_grad_(False)  # an eval copy: the caller's model is unchanged
    batch = batch_size or batch_size_of(example_input)
    x = _repeat(example_input, batch)
    device = (x if isinstance(x, torch.Tensor) else next(v for v in x.values() if isinstance(v, torch.Tensor))).device
    slots = weight_slots(dense)
    inputs = _layer_inputs(dense, slots, x)
    rows, chosen = [], {}
    for name, (module, attribute) in slots.items():
        weight = getattr(module, attribute)
        density = float((weight != 0).float().mean())
        candidates = _candidates(module, attribute, device) if name in inputs and density <= MAX_TIMED_DENSITY else {}
        forced = next((k for p, k in (kernels or {}).items() if fnmatch.fnmatchcase(name, p)), None)
        timings: dict[str, float] = {}
        if forced is not None and (forced == DENSE or forced in candidates):
            kernel, built = forced, {}
        else:
            built = {kernel: build(module, attribute) for kernel, build in candidates.items()}
            timings = _time_layer(module, attribute, built, inputs.get(name), device) if built else {}
            kernel = _fastest(timings)
        if kernel != DENSE:
            chosen[name] = built[kernel] if kernel in built else candidates[kernel](module, attribute)
        rows.append(PlanRow(name, tuple(weight.shape), density, kernel, timings))
    deployed = _replace(copy.deepcopy(dense), chosen)
    plan_kwargs = {"batch_size": batch}
    if chosen and kernels is None:  # layers that pay alone may not pay together (layouts, lost fusions)
        call(deployed, x)  # a deployed network that fails says why here; the timing would only drop it
        network_ms = time_interleaved({DENSE: lambda: call(dense, x), "deployed": lambda: call(deployed, x)},
                                      device=device, budget_seconds=0.5)
        plan_kwargs["network_ms"] = network_ms
        if network_ms["deployed"] > SPARSE_MARGIN * network_ms[DENSE]:
            deployed, plan_kwargs["reverted"] = dense, True
            rows = [row._replace(kernel=DENSE) for row in rows]
    return DeployedModel(deployed, Plan(rows, **plan_kwargs))


def _repeat(example: ModelInput, batch: int) -> ModelInput:
    """The example's examples cycled to ``batch`` (indexing: token ids stay ids)."""
    if isinstance(example, Mapping):
        given = batch_size_of(example)
        return {k: v[torch.arange(batch, device=v.device) % given] if isinstance(v, torch.Tensor) else v
                for k, v in example.items()}
    return example[torch.arange(batch, device=example.device) % example.shape[0]]


def _refuse_parametrized(model: nn.Module) -> None:
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("deploy takes a plain network: pass the method's export (SparseMethod.export(model)), "
                         "which multiplies DST's masks into the weights")


def _layer_inputs(network: nn.Module, slots, x: ModelInput) -> dict[str, torch.Tensor]:
    """Each weight's input on the example, by mask name (hooks on the owning modules; the hooks
    also keep nn.TransformerEncoderLayer off its fused path, so its attention is really called)."""
    seen: dict[int, torch.Tensor] = {}

    def capture(module, args, kwargs):
        if id(module) not in seen:
            seen[id(module)] = args[0] if args else kwargs["query"]

    owners = {id(module): module for module, _ in slots.values()}
    handles = [m.register_forward_pre_hook(capture, with_kwargs=True) for m in owners.values()]
    try:
        call(network, x)
    finally:
        for handle in handles:
            handle.remove()
    inputs = {name: seen[id(module)] for name, (module, _) in slots.items() if id(module) in seen}
    # nn.MultiheadAttention uses out_proj's weight without calling it: its input has the query's shape
    for name, module in network.named_modules():
        out_name = f"{name}.out_proj" if name else "out_proj"
        if isinstance(module, nn.MultiheadAttention) and id(module) in seen and out_name in slots:
            inputs.setdefault(out_name, torch.randn_like(seen[id(module)]))
    return inputs


def _candidates(module: nn.Module, attribute: str, device: torch.device) -> dict:
    """Sparse kernels that fit this layer: name -> builder(module, attribute) of the replacement."""
    weight = getattr(module, attribute)
    names = ["unfold-csr", "csr"]
    block = square_block_size(weight) if weight.dim() == 2 else None
    if block is not None:
        names.append(f"bsr{block}x{block}")
    if semi_structured_available(device) and is_two_four(weight):
        names.append(SEMI_STRUCTURED)
    return {name: build for name in names if (build := kernel_builder(name, module, attribute)) is not None}


def kernel_builder(kernel: str, module: nn.Module, attribute: str):
    """How ``kernel`` is built in place of ``module``'s ``attribute``: a function of (module,
    attribute), or None where that kernel cannot run this layer. ``load_deployed`` swaps a saved
    plan's kernels in with it, as deploy did."""
    if isinstance(module, nn.Conv2d):
        return (lambda m, a: UnfoldConv2d(m)) if kernel == "unfold-csr" and UnfoldConv2d.supports(module) else None
    if isinstance(module, nn.MultiheadAttention) and not DeployedAttention.supports(module):
        return None
    if not isinstance(module, (nn.Linear, nn.MultiheadAttention)):
        return None  # Conv1d / Conv3d: dense
    block = re.fullmatch(r"bsr(\d+)x\1", kernel)
    if kernel == "csr":
        return lambda m, a: SparseLinear(getattr(m, a), _bias(m, a))
    if block is not None:
        return lambda m, a: SparseLinear(getattr(m, a), _bias(m, a), "bsr", int(block[1]))
    if kernel == SEMI_STRUCTURED:
        return lambda m, a: SemiStructuredLinear(getattr(m, a), _bias(m, a))
    return None


def _bias(module: nn.Module, attribute: str) -> torch.Tensor | None:
    return module.in_proj_bias if attribute == "in_proj_weight" else module.bias


def _time_layer(module, attribute, built: dict[str, nn.Module], x, device) -> dict[str, float]:
    if attribute == "in_proj_weight":  # the attention's packed q/k/v projection of its input
        weight, bias = module.in_proj_weight, module.in_proj_bias
        calls = {DENSE: lambda: F.linear(x, weight, bias)}
    else:
        calls = {DENSE: lambda: module(x)}
    calls.update({kernel: (lambda m=m: m(x)) for kernel, m in built.items()})
    return time_interleaved(calls, device=device)


def _fastest(timings: dict[str, float]) -> str:
    sparse = {k: ms for k, ms in timings.items() if k != DENSE}
    if DENSE not in timings or not sparse:
        return DENSE
    best = min(sparse, key=sparse.get)
    return best if sparse[best] <= SPARSE_MARGIN * timings[DENSE] else DENSE


def _replace(network: nn.Module, chosen: dict[str, nn.Module]) -> nn.Module:
    """Put the chosen kernels in (``network`` is a copy of the one they were built from)."""
    chosen = dict(chosen)  # the caller's stays whole: it decides whether the network is timed
    for name, module in network.named_modules():
        if not isinstance(module, nn.MultiheadAttention):
            continue
        prefix = f"{name}." if name else ""
        in_name, out_name = f"{prefix}in_proj_weight", f"{prefix}out_proj"
        if in_name not in chosen and out_name not in chosen:
            continue
        in_proj = chosen.pop(in_name, None) or _dense_linear(module.in_proj_weight, module.in_proj_bias)
        out_proj = chosen.pop(out_name, None) or module.out_proj
        network.set_submodule(name, DeployedAttention(module, in_proj, out_proj))
    for name, replacement in chosen.items():
        network.set_submodule(name, replacement)
    for layer in network.modules():  # torch's fused path would read the dense weights of what was replaced
        if isinstance(layer, nn.TransformerEncoderLayer) and _holds_replaced(layer):
            layer.__class__ = SubmoduleEncoderLayer
    return network


def _holds_replaced(layer: nn.TransformerEncoderLayer) -> bool:
    return not isinstance(layer.self_attn, nn.MultiheadAttention) or not all(
        isinstance(linear, nn.Linear) for linear in (layer.linear1, layer.linear2))


def _dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    linear.weight.data.copy_(weight)
    if bias is not None:
        linear.bias.data.copy_(bias)
    return linear.requires_grad_(False)
