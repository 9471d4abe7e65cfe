"""Neural implants: zero implants start as removed channels, full-rank ones as the original conv."""

import copy

import pytest
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.structured.channels import PruningPlan, apply_plan, channel_groups, group_importance, plan_pruning
from raysparse.structured.implants import ImplantedConv, LowRankImplant, ZeroInitImplant, implant_conv
from tests.structured.test_channels import built, example, planned

GEOMETRIES = [  # (kernel, stride, padding, dilation): "same", strided, "valid" (a cropped 1x1 branch), dilated
    (3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 0, 1), (3, 2, 2, 2), (1, 2, 0, 1), (3, 1, 3, 1),
]
IMPLANTS = [1, 4]


def conv_with(geometry, bias=True) -> nn.Conv2d:
    kernel, stride, padding, dilation = geometry
    torch.manual_seed(0)
    return nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)


def inputs() -> torch.Tensor:
    return torch.randn(2, 4, 11, 11, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("geometry", GEOMETRIES)
@torch.no_grad()
def test_zero_implant_starts_as_if_its_channels_were_removed(geometry):
    conv = conv_with(geometry)
    reference = copy.deepcopy(conv)
    reference.weight[IMPLANTS] = 0
    reference.bias[IMPLANTS] = 0
    implanted = implant_conv(conv, IMPLANTS, "zero")
    assert isinstance(implanted, ZeroInitImplant)
    torch.testing.assert_close(implanted(inputs()), reference(inputs()))
    assert implanted(inputs())[:, IMPLANTS].abs().max() == 0


@pytest.mark.parametrize("geometry", GEOMETRIES)
@torch.no_grad()
def test_full_rank_lowrank_implant_reproduces_the_conv(geometry):
    conv = conv_with(geometry)
    implanted = LowRankImplant(conv, IMPLANTS, rank=len(IMPLANTS))
    torch.testing.assert_close(implanted(inputs()), conv(inputs()), atol=1e-5, rtol=1e-4)
    default = implant_conv(conv, [0, 1, 2, 3, 5], "lowrank")  # rank max(1, 5 // 4) = 1
    assert default.implant[0].out_channels == 1 and default.kept.out_channels == 1
    assert not torch.allclose(default(inputs()), conv(inputs()))  # rank 1 of 5 is an approximation


def test_zero_implants_in_a_resnet_equal_the_compact_model_with_implant_rows_zeroed():
    model = built("resnet20")
    groups = channel_groups(model, example())
    generator = torch.Generator().manual_seed(3)
    # Residual streams add up several layers' importance; scale them down so they get implants too.
    importance = {name: torch.rand(group.channels, generator=generator) / len(group.output_modules) ** 2
                  for group in groups for name in group.output_modules}
    plan = plan_pruning(groups, group_importance(groups, importance), ratio=0.3, implant_ratio=0.3)
    assert plan.channels_implanted == round(0.3 * (plan.channels_removed + plan.channels_implanted)) > 0
    without = PruningPlan.from_dict({
        **plan.to_dict(), "channels_implanted": 0,
        "groups": {gid: {**entry, "implants": []} for gid, entry in plan.groups.items()},
    })
    implanted, reference = copy.deepcopy(model), copy.deepcopy(model)
    apply_plan(implanted, example(), plan)
    apply_plan(reference, example(), without)
    layers = 0
    with torch.no_grad():
        for group in groups:
            entry = plan.groups[group.id]
            kept = [c for c in range(group.channels) if c not in entry["removed"]]
            for name in group.output_modules if entry["implants"] else ():
                reference.get_submodule(name).weight[[kept.index(c) for c in entry["implants"]]] = 0
                assert isinstance(implanted.get_submodule(name), ZeroInitImplant)
                layers += 1
        assert layers > len([g for g in groups if plan.groups[g.id]["implants"]])  # residual groups: several
        torch.testing.assert_close(implanted(example()), reference(example()), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["zero", "lowrank"])
def test_gradients_reach_implant_parameters(kind):
    model = built("resnet20")
    _, plan = planned(model, ratio=0.3, implant_ratio=0.3, implant_kind=kind)
    apply_plan(model, example(), plan)
    model(example()).square().sum().backward()
    implant_params = [p for m in model.modules() if isinstance(m, ImplantedConv) for p in m.implant.parameters()]
    assert implant_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in implant_params)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.14, still in use
@pytest.mark.parametrize("kind", ["zero", "lowrank"])
def test_implanted_model_scripts_traces_and_exports(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3, 2, 0)).eval()
    model[0], model[3] = implant_conv(model[0], [0, 5, 6], kind), implant_conv(model[3], [2], kind)
    x = inputs()
    expected = model(x)
    torch.testing.assert_close(torch.jit.script(model)(x), expected)
    torch.testing.assert_close(torch.jit.trace(model, x)(x), expected)
    torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)


def test_bad_implant_requests_are_refused():
    with pytest.raises(ValueError, match="plain Conv2d"):
        implant_conv(nn.Conv2d(4, 6, 3, groups=2), [0])
    with pytest.raises(ValueError, match="plain Conv2d"):
        implant_conv(nn.Conv2d(4, 6, 2), [0])  # an even kernel has no centre tap
    with pytest.raises(ValueError, match="at least one"):
        implant_conv(nn.Conv2d(4, 2, 3), [0, 1])
    with pytest.raises(ValueError, match="distinct"):
        implant_conv(nn.Conv2d(4, 6, 3), [1, 1])
    with pytest.raises(ConfigError, match="did you mean 'lowrank'"):
        implant_conv(nn.Conv2d(4, 6, 3), [0], "low_rank")


def test_mlp_channels_get_no_implants():
    model = built("mlp")
    groups, plan = planned(model, ratio=0.3, implant_ratio=0.5)
    assert not any(group.implantable for group in groups) and plan.channels_implanted == 0
