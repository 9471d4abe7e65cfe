"""Channel groups and physical channel removal (HAP's structured pruning); the plan is made in :mod:`.plan`.

HAP: Yu et al., "Hessian-Aware Pruning and Optimal Neural Implant", https://arxiv.org/abs/2101.08940

torch-pruning's dependency graph finds which output channels go together (a residual sum couples every
conv adding into it) and slices every layer they touch; :mod:`raysparse.structured.plan` decides which go.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from raysparse.structured.implants import implant_conv, supports_implant
from raysparse.structured.plan import PruningPlan
from raysparse.structured.plan import plan_pruning as plan_pruning  # re-exported: callers still import it here

ROOT_TYPES = (nn.Conv2d, nn.Linear)


class ParamSlice(NamedTuple):
    """Each channel of a group owns ``per_channel`` slices along ``dim`` of parameter ``name``."""

    name: str
    shape: tuple[int, ...]
    dim: int
    per_channel: int


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Output channels removed together, named after the group's root layer in torch-pruning.

    ``output_modules``: the Conv/Linear layers whose outputs are these channels (several on a residual
    stream). ``params_per_channel``: what removing one channel alone deletes, counted exactly from the
    shapes in ``param_slices`` (every parameter a dependency of the group slices). When two coupled
    groups both lose channels, the weights at their crossing go once; :func:`plan_pruning` counts that.
    """

    id: str
    channels: int
    output_modules: tuple[str, ...]
    params_per_channel: int
    implantable: bool
    param_slices: tuple[ParamSlice, ...]


def channel_groups(
    model: nn.Module, example_input: torch.Tensor, *, keep: Iterable[nn.Module] = (), info: dict | None = None
) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``, traced on ``example_input``; the model's mode is kept.

    Left out: groups holding an output channel of a module in ``keep``, groups whose channels are the
    model's outputs (so the classifier keeps its classes even if not named in ``keep``), and groups
    that torch-pruning would not cut cleanly (:func:`_why_not_removable`: attention widths, bare
    parameters). If ``info`` is a dict, it receives ``skipped``: ``[(layers, reason)]`` of the latter.
    """
    graph = _dependency_graph(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    groups, skipped = [], []
    for group in graph.get_all_groups(ignored_layers=list(keep), root_module_types=list(ROOT_TYPES)):
        producers = [item for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
        if any(not item.dep.target.outputs for item in producers):  # a graph sink: the model's output
            continue
        reason = _why_not_removable(group)
        if reason:
            layers = tuple(names[item.dep.target.module] for item in producers if item.dep.target.module in names)
            skipped.append((layers, reason))
            continue
        channels = len(group[0].idxs)
        layers = [item for item in producers if isinstance(item.dep.target.module, ROOT_TYPES)]
        if any(list(item.idxs) != list(range(channels)) for item in layers):  # group_importance adds them up
            raise ValueError(f"group {names[group[0].dep.target.module]!r}: channels are permuted inside the group")
        slices = tuple(
            ParamSlice(f"{names[item.dep.target.module]}.{param}", shape, dim, len(item.idxs) // channels)
            for item in group for param, shape, dim in _sliced_params(item.dep)
        )
        outputs = tuple(names[item.dep.target.module] for item in layers)  # the root layer first
        groups.append(ChannelGroup(
            outputs[0], channels, outputs, sum(s.per_channel * math.prod(s.shape) // s.shape[s.dim] for s in slices),
            all(supports_implant(model.get_submodule(name)) for name in outputs), slices,
        ))
    if info is not None:
        info["skipped"] = skipped
    return groups


def _why_not_removable(group) -> str:
    """Why torch-pruning (1.6.1) cannot remove this group's channels without changing what the
    network computes beyond losing them; '' when it can.

    nn.MultiheadAttention: its pruner only shrinks ``embed_dim``, which is tied to the residual width
    of every block, keeps ``num_heads`` and splits the rest into new, narrower heads, so removed
    channels would move dimensions between heads; whole heads it cannot remove from the packed
    ``in_proj_weight``. A bare nn.Parameter (a class token, position table): torch-pruning guesses
    which of its dimensions to cut.
    """
    targets = [item.dep.target.module for item in group]
    if any(isinstance(target, nn.MultiheadAttention) for target in targets):
        return ("the width tied to an nn.MultiheadAttention's embed_dim (torch-pruning would re-split its heads "
                "and cannot remove whole heads)")
    if any(isinstance(target, nn.Parameter) for target in targets):
        return "the width of a bare nn.Parameter (torch-pruning would guess which dimension to cut)"
    return ""


def group_importance(groups: Iterable[ChannelGroup], importance: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per channel of each group, the SUM of its importance over the group's output modules.

    Coupled channels go together, so what the network loses is the sum of what each layer loses.
    """
    scores = {}
    for group in groups:
        missing = [name for name in group.output_modules if name not in importance]
        if missing:
            raise KeyError(f"group {group.id!r}: no importance for {', '.join(missing)}")
        parts = [importance[name].detach().reshape(-1).double().cpu() for name in group.output_modules]
        if any(part.numel() != group.channels for part in parts):
            raise ValueError(f"group {group.id!r}: importance must have {group.channels} entries per module")
        scores[group.id] = torch.stack(parts).sum(0)
    return scores



def apply_plan(model: nn.Module, example_input: torch.Tensor, plan: PruningPlan | Mapping) -> dict[str, int]:
    """Physically remove the plan's channels, then put implants on its implant channels; in place.

    One dependency graph serves every group: groups share no output channels and the graph holds the
    modules themselves, so each prune sees the shapes the previous ones left. The whole plan is checked
    against the model before anything changes. Input and output shapes of the forward pass stay;
    parameters are new objects, so build the optimizer afterwards.
    """
    plan = PruningPlan.from_dict(plan)
    params_before = sum(p.numel() for p in model.parameters())
    graph = _dependency_graph(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    prunes, implants = [], []
    for group_id, entry in plan.groups.items():
        removed, implanted = entry["removed"], entry["implants"]
        root, pruning_fn = _root(model, group_id, entry)
        prunes += [(root, pruning_fn, removed)] if removed else []
        if implanted:  # implanted after all removals, so their indices count kept channels only
            kept = [c for c in range(entry["channels"]) if c not in set(removed)]
            for item in graph.get_pruning_group(root, pruning_fn, implanted):
                layer = item.dep.target.module
                if graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(layer, ROOT_TYPES):
                    if not supports_implant(layer):
                        raise ValueError(f"plan group {group_id!r}: {names[layer]} cannot take implants: {layer}")
                    implants.append((names[layer], [kept.index(c) for c in implanted]))
    for root, pruning_fn, removed in prunes:
        graph.get_pruning_group(root, pruning_fn, removed).prune()
    for name, renumbered in implants:
        parent, _, attribute = name.rpartition(".")
        conv = model.get_submodule(name)
        setattr(model.get_submodule(parent), attribute, implant_conv(conv, renumbered, plan.implant_kind))
    channels = sum(entry["channels"] for entry in plan.groups.values())
    return {
        "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters()),
        "channels_before": channels, "channels_after": channels - plan.channels_removed,
        "channels_implanted": plan.channels_implanted,
    }


@torch.no_grad()
def zero_channels(model: nn.Module, example_input: torch.Tensor, plan: PruningPlan | Mapping) -> None:
    """The masked twin of :func:`apply_plan`: zero, in place, every parameter entry it would delete.

    That is the removed channels' conv/linear rows and biases, their BatchNorm weight and bias, and the
    columns of the layers reading them. Implant channels are left alone.
    """
    plan = PruningPlan.from_dict(plan)
    graph = _dependency_graph(model, example_input)
    for group_id, entry in plan.groups.items():
        if entry["removed"]:
            root, pruning_fn = _root(model, group_id, entry)
            for item in graph.get_pruning_group(root, pruning_fn, entry["removed"]):
                for param, _, dim in _sliced_params(item.dep):
                    weight = item.dep.target.module.get_parameter(param)
                    weight.index_fill_(dim, torch.tensor(item.idxs, device=weight.device), 0)


def _dependency_graph(model: nn.Module, example_input: torch.Tensor):
    import torch_pruning as tp  # here: importing the package (fold_batchnorm, deploy) must not load it

    modes = {module: module.training for module in model.modules()}  # the tracer switches all to eval
    with torch.enable_grad():  # torch-pruning traces autograd nodes
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    for module, training in modes.items():
        module.training = training
    return graph  # bare parameters (torch-pruning's "unwrapped" ones): channel_groups leaves their groups out


def _sliced_params(dep) -> list[tuple[str, tuple[int, ...], int]]:
    """(parameter, shape, dim) the dependency's handler slices, found by letting it remove channel 0 of a
    copy of the layer: every layer type torch-pruning supports is counted without a table of types here."""
    module = dep.target.module
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()} if isinstance(module, nn.Module) else {}
    if not shapes:
        return []
    probe = copy.deepcopy(module)
    dep.handler.__self__.pruning_dim = dep.target.pruning_dim  # what tp's Dependency.__call__ sets first
    dep.handler(probe, [0])
    after = {name: p.shape for name, p in probe.named_parameters()}
    return [(name, shape, dim) for name, shape in shapes.items() for dim in range(len(shape))
            if after[name][dim] < shape[dim]]



def _root(model: nn.Module, group_id: str, entry: Mapping):
    """A plan group's root layer and out-channel pruning function, after checking the entry fits it."""
    try:
        root = model.get_submodule(group_id)
    except AttributeError:
        raise ValueError(f"plan group {group_id!r} is not a layer of this model (plan for another model?)") from None
    channels, touched = entry["channels"], [*entry["removed"], *entry.get("implants", [])]
    found = getattr(root, "out_channels", getattr(root, "out_features", None))
    if not isinstance(root, ROOT_TYPES) or found != channels:
        raise ValueError(f"plan group {group_id!r} has {channels} channels; the model's layer is {root}")
    if len(set(touched)) != len(touched) or len(touched) >= channels or not set(touched) <= set(range(channels)):
        raise ValueError(f"plan group {group_id!r}: removed and implant channels must be distinct indices in "
                         f"[0, {channels}) leaving one channel, got {entry}")
    import torch_pruning as tp

    return root, tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else tp.prune_linear_out_channels
