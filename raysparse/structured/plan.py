"""Which channels go: a global ranking of channel groups by score, under a channel or parameter budget.

HAP: Yu et al., "Hessian-Aware Pruning and Optimal Neural Implant", https://arxiv.org/abs/2101.08940

Plain data in, plain data out: the groups come from :func:`raysparse.structured.channels.channel_groups`,
and :func:`raysparse.structured.channels.apply_plan` carries the plan out. No torch-pruning here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from raysparse.errors import unknown_choice
from raysparse.structured.implants import IMPLANT_KINDS

if TYPE_CHECKING:  # annotations only: channels imports this module at runtime
    from raysparse.structured.channels import ChannelGroup

UNITS = ("channels", "params")


@dataclasses.dataclass(frozen=True)
class PruningPlan:
    """Channels to go, in the original numbering: ``groups[id] = {"channels", "removed", "implants"}``.

    Plain data: ``torch.save(plan.to_dict())`` loads back with ``weights_only=True``, and
    :func:`apply_plan` on a fresh copy of the same architecture rebuilds the same compact model.
    ``params_total`` counts the parameters the groups could remove; ``params_removed`` is exact.
    """

    groups: dict[str, dict]
    implant_kind: str
    channels_total: int
    channels_removed: int
    channels_implanted: int
    params_total: int
    params_removed: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: PruningPlan | Mapping) -> PruningPlan:
        return state if isinstance(state, cls) else cls(**state)


def plan_pruning(
    groups: list[ChannelGroup], group_scores: Mapping[str, torch.Tensor], *, ratio: float, unit: str = "channels",
    layer_cap: float = 0.95, implant_ratio: float = 0.0, implant_kind: str = "zero",
) -> PruningPlan:
    """Rank all channels globally by score, lowest first, and select them until ``ratio`` is reached.

    ``unit="channels"``: ``round(ratio * channels)`` channels; ``unit="params"``: until the exactly
    counted removed parameters reach ``ratio * params_total``. A group loses at most ``layer_cap`` of its
    channels and keeps one; a full group is skipped and the ranking goes on, so the target is met when
    the caps allow (the seed code thresholds, then caps, and so removes less than asked).
    Of the selected channels whose output layers take implants (plain convs), the most important
    ``implant_ratio`` share (HAP's band between quantiles (1 - implant_ratio) * ratio and ratio) becomes
    ``implant_kind`` implants, kept and computed cheaply; at least one when any can. The band is chosen
    among those channels, not among all selected ones: else float noise in the ranking can put it on
    Linear channels alone and a user who asked for implants silently gets none.
    """
    for name, value in [("ratio", ratio), ("layer_cap", layer_cap), ("implant_ratio", implant_ratio)]:
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {name}={value}")
    if unit not in UNITS:
        raise unknown_choice("unit", "unit", unit, UNITS)
    if implant_kind not in IMPLANT_KINDS:
        raise unknown_choice("implant_kind", "implant kind", implant_kind, IMPLANT_KINDS)
    scores = torch.cat([group_scores[group.id].reshape(-1).double().cpu() for group in groups])
    if len(scores) != sum(group.channels for group in groups) or not torch.isfinite(scores).all():
        raise ValueError("group_scores must hold one finite score per channel of each group")
    owners = [(index, channel) for index, group in enumerate(groups) for channel in range(group.channels)]
    caps = [min(math.floor(layer_cap * group.channels + 1e-9), group.channels - 1) for group in groups]
    table = _param_table(groups)
    params_total = _params_left(table, [0] * len(groups))
    target = round(ratio * len(owners)) if unit == "channels" else ratio * params_total
    counts, selected = [0] * len(groups), []  # selected: in ranking order
    for position in torch.argsort(scores, stable=True).tolist():
        done = len(selected) if unit == "channels" else params_total - _params_left(table, counts)
        if done >= target:
            break
        index, channel = owners[position]
        if counts[index] < caps[index]:
            counts[index] += 1
            selected.append((index, channel))
    implanted = set(_implant_band([pick for pick in selected if groups[pick[0]].implantable], implant_ratio))
    entries = {group.id: {"channels": group.channels, "removed": [], "implants": []} for group in groups}
    for index, channel in sorted(selected, key=lambda pick: pick[1]):
        kept_cheaply = (index, channel) in implanted
        entries[groups[index].id]["implants" if kept_cheaply else "removed"].append(channel)
        counts[index] -= kept_cheaply
    params_removed = params_total - _params_left(table, counts)
    return PruningPlan(entries, implant_kind, len(owners), len(selected) - len(implanted), len(implanted),
                       params_total, params_removed)


def _implant_band(implantable: list[tuple[int, int]], implant_ratio: float) -> list[tuple[int, int]]:
    """The most important ``implant_ratio`` share of ``implantable`` (in ranking order, least important
    first); at least one channel when the ratio is above zero and there is one to implant."""
    if implant_ratio == 0 or not implantable:
        return []
    size = max(1, round(implant_ratio * len(implantable)))
    return implantable[len(implantable) - size:]


def _param_table(groups: list[ChannelGroup]) -> dict[str, tuple[tuple[int, ...], list[tuple[int, int, int]]]]:
    """{parameter: (shape, [(dim, group index, per_channel)])}: each parameter with the groups it shrinks with."""
    table: dict = {}
    for index, group in enumerate(groups):
        for s in group.param_slices:
            table.setdefault(s.name, (s.shape, []))[1].append((s.dim, index, s.per_channel))
    return table


def _params_left(table: dict, counts: list[int]) -> int:
    """Parameters left when group i has lost counts[i] channels: a conv losing input and output
    channels at once loses their crossing once, unlike a sum of per-channel costs."""
    left = 0
    for shape, ties in table.values():
        sizes = list(shape)
        for dim, index, per_channel in ties:
            sizes[dim] -= per_channel * counts[index]
        left += math.prod(sizes)
    return left
