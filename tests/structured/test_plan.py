"""Global plans: ranking, budgets in channels or parameters, layer caps, implants and checkpoints."""

import io
import math

import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.structured.channels import ChannelGroup, ParamSlice, apply_plan
from raysparse.structured.plan import PruningPlan, plan_pruning
from tests.structured.test_channels import built, example, planned


def test_params_unit_reaches_target_by_at_most_one_channel():
    model = built("resnet20")
    groups, plan = planned(model, ratio=0.4, unit="params")
    target = 0.4 * plan.params_total
    assert target <= plan.params_removed < target + max(group.params_per_channel for group in groups)
    summary = apply_plan(model, example(), plan)
    assert summary["params_before"] - summary["params_after"] == plan.params_removed


@pytest.mark.parametrize("layer_cap", [0.95, 1.0])
def test_layer_cap_and_one_kept_channel_hold_at_extreme_ratio(layer_cap):
    model = built("resnet20")
    groups, plan = planned(model, ratio=0.99, layer_cap=layer_cap)
    for group in groups:
        removed = len(plan.groups[group.id]["removed"])
        assert removed <= min(math.floor(layer_cap * group.channels), group.channels - 1)
    assert plan.channels_removed == sum(min(math.floor(layer_cap * g.channels), g.channels - 1) for g in groups)
    apply_plan(model, example(), plan)
    assert model(example()).shape == (2, 10)


def test_plan_round_trips_through_a_checkpoint_and_rebuilds_the_same_model():
    first = built("resnet20")
    _, plan = planned(first, ratio=0.3, implant_ratio=0.2, implant_kind="lowrank")
    apply_plan(first, example(), plan)
    buffer = io.BytesIO()
    torch.save({"plan": plan.to_dict(), "state": first.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert PruningPlan.from_dict(checkpoint["plan"]) == plan
    resumed = built("resnet20")
    apply_plan(resumed, example(), checkpoint["plan"])
    assert {k: v.shape for k, v in resumed.state_dict().items()} == {k: v.shape for k, v in first.state_dict().items()}
    resumed.load_state_dict(checkpoint["state"])
    torch.testing.assert_close(resumed(example()), first(example()))


def test_hand_computed_plans():
    # One weight (3, 2): its rows are group a's channels, its columns group b's.
    crossing = ParamSlice("fc.weight", (3, 2), 0, 1), ParamSlice("fc.weight", (3, 2), 1, 1)
    groups = [ChannelGroup("a", 3, ("a",), 2, True, crossing[:1]), ChannelGroup("b", 2, ("b",), 3, False, crossing[1:])]
    scores = {"a": torch.tensor([0.1, 0.5, 0.9]), "b": torch.tensor([0.2, 0.3])}
    # 3 of 5 channels by score: a0, b0, (b1 skipped: b keeps one), a1; the top third of them is implanted.
    plan = plan_pruning(groups, scores, ratio=0.6, implant_ratio=1 / 3)
    assert plan.groups == {"a": {"channels": 3, "removed": [0], "implants": [1]},
                           "b": {"channels": 2, "removed": [0], "implants": []}}
    # params: a0 leaves 2x2 (2 removed), then b0 leaves 2x1: 4 removed, not 2 + 3 = 5.
    scores = {"a": torch.tensor([0.1, 0.9, 0.8]), "b": torch.tensor([0.2, 0.7])}
    plan = plan_pruning(groups, scores, ratio=0.5, unit="params")
    assert (plan.params_total, plan.params_removed, plan.channels_removed) == (6, 4, 2)


def test_implants_go_to_the_selected_channels_that_can_take_one():
    # a: a conv's channels (implantable), b: a Linear's (not). The most important selected channels are
    # b's, so a band over all selected channels would fall on b alone and give no implant at all.
    groups = [ChannelGroup("a", 4, ("a",), 1, True, ()), ChannelGroup("b", 4, ("b",), 1, False, ())]
    scores = {"a": torch.tensor([0.1, 0.2, 0.9, 0.9]), "b": torch.tensor([0.3, 0.4, 0.5, 0.9])}
    plan = plan_pruning(groups, scores, ratio=0.625, implant_ratio=0.2)  # 5 selected: a0 a1 b0 b1 b2
    assert plan.groups["a"] == {"channels": 4, "removed": [0], "implants": [1]}  # a1: the more important
    assert plan.groups["b"] == {"channels": 4, "removed": [0, 1, 2], "implants": []}
    assert (plan.channels_removed, plan.channels_implanted) == (4, 1)
    # half of the two implantable ones, whatever the ratio of all selected channels that means
    plan = plan_pruning(groups, scores, ratio=0.625, implant_ratio=0.5)
    assert plan.groups["a"]["implants"] == [1] and plan.channels_implanted == 1


def test_no_implant_when_no_selected_channel_can_take_one():
    groups = [ChannelGroup("a", 4, ("a",), 1, True, ()), ChannelGroup("b", 4, ("b",), 1, False, ())]
    scores = {"a": torch.tensor([0.9, 0.9, 0.9, 0.9]), "b": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    plan = plan_pruning(groups, scores, ratio=0.25, implant_ratio=0.5)
    assert plan.channels_implanted == 0 and plan.groups["b"]["removed"] == [0, 1]


def test_bad_plan_arguments_are_named():
    groups = [ChannelGroup("a", 2, ("a",), 1, True, ())]
    scores = {"a": torch.tensor([0.1, 0.2])}
    with pytest.raises(ValueError, match="ratio=1.5"):
        plan_pruning(groups, scores, ratio=1.5)
    with pytest.raises(ConfigError, match="available: channels, params"):
        plan_pruning(groups, scores, ratio=0.5, unit="flops")
    with pytest.raises(ConfigError, match="did you mean 'zero'"):
        plan_pruning(groups, scores, ratio=0.5, implant_kind="zeros")
