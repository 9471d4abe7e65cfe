"""Folding eval-mode BatchNorm into the convolution before it: the deployed form of a conv net.

In eval a BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` is one convolution with
rescaled weights and a bias: one memory-bound pass over every feature map less. On this CPU that
made ResNet-20, dense and HAP-compacted, 12-26% faster (``benchmarks/compaction.py``, README).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from raysparse.structured.implants import ImplantedConv


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval copy of ``model`` with every Conv2d -> BatchNorm2d pair folded into one Conv2d.

    A pair is a BatchNorm2d (with running statistics) whose only input is the output of a Conv2d (or of
    HAP's :class:`~raysparse.structured.implants.ImplantedConv`) that nothing else reads; each module
    is called once. Pairs are found on a torch.fx trace; a model that does not trace falls back to the
    pairs that sit next to each other in an ``nn.Sequential``. The folded convolution takes the conv's
    place and the BatchNorm becomes ``nn.Identity``, so the copy keeps the model's classes and module
    names. ``model`` is left untouched; the copy's eval outputs equal the original's eval outputs within
    float tolerance.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in _conv_bn_pairs(folded):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _set_submodule(folded, conv_name, _fold(conv, bn))
        _set_submodule(folded, bn_name, nn.Identity())
    return folded


FOLDABLE = (nn.Conv2d, ImplantedConv)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    try:
        graph = _LeafImplants().trace(model)
    except Exception:  # data-dependent control flow: fx cannot trace it, adjacency in a Sequential still holds
        return _sequential_pairs(model)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_foldable_bn(model.get_submodule(node.target)):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(model.get_submodule(source.target), FOLDABLE)
                and calls[source.target] == 1 and calls[node.target] == 1):  # a shared module would fold twice
            pairs.append((source.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
                if isinstance(conv, FOLDABLE) and _is_foldable_bn(bn):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + conv_name, prefix + bn_name))
    return pairs


class _LeafImplants(fx.Tracer):
    """Keeps an ImplantedConv whole in the trace, so the BatchNorm after it is seen as reading it."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, ImplantedConv) or super().is_leaf_module(module, qualified_name)


def _is_foldable_bn(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d and module.running_mean is not None and module.running_var is not None


def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    if isinstance(conv, nn.Conv2d):
        return _fold_rows(conv, bn, list(range(conv.out_channels)))
    # ImplantedConv: output = cat(kept(x), implant(x))[:, channel_order], so row r of the cat is output
    # channel listing[r], the inverse permutation; the BatchNorm rows follow the branches' rows
    listing = torch.argsort(conv.channel_order).tolist()
    kept_channels = conv.kept.out_channels
    last = conv.implant[-1] if isinstance(conv.implant, nn.Sequential) else conv.implant
    if not isinstance(conv.kept, nn.Conv2d) or not isinstance(last, nn.Conv2d):
        raise TypeError(f"cannot fold a BatchNorm into {conv}: its branches must end in Conv2d")
    folded = copy.deepcopy(conv)
    folded.kept = _fold_rows(conv.kept, bn, listing[:kept_channels])
    new_last = _fold_rows(last, bn, listing[kept_channels:])
    if isinstance(folded.implant, nn.Sequential):
        folded.implant[-1] = new_last
    else:
        folded.implant = new_last
    return folded


def _fold_rows(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: list[int]) -> nn.Conv2d:
    """``conv`` followed by BatchNorm channels ``channels`` (one per output channel of ``conv``, in order)."""
    fused = copy.deepcopy(conv)
    index = torch.tensor(channels, dtype=torch.long, device=bn.running_mean.device)
    weight, bias = (bn.weight[index], bn.bias[index]) if bn.affine else (None, None)
    with torch.no_grad():
        fused.weight, fused.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean[index], bn.running_var[index], bn.eps, weight, bias,
        )
    return fused


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, module)
