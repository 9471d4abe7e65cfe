"""Structured (channel-level) pruning: Hessian channel sensitivities, a global channel plan,
physical compaction with torch-pruning's dependency graph, and neural implants (HAP)."""

from raysparse.structured.channels import ChannelGroup, apply_plan, channel_groups, group_importance, zero_channels
from raysparse.structured.fold import fold_batchnorm
from raysparse.structured.hessian import channel_hessian_traces
from raysparse.structured.implants import IMPLANT_KINDS, ImplantedConv, LowRankImplant, ZeroInitImplant, implant_conv
from raysparse.structured.plan import PruningPlan, plan_pruning

__all__ = [
    "IMPLANT_KINDS", "ChannelGroup", "ImplantedConv", "LowRankImplant", "PruningPlan", "ZeroInitImplant",
    "apply_plan", "channel_groups", "channel_hessian_traces", "fold_batchnorm", "group_importance", "implant_conv",
    "plan_pruning", "zero_channels",
]
