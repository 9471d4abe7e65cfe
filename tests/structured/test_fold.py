"""fold_batchnorm: the folded copy computes what the model computes in eval, with no BatchNorm left."""

import copy

import pytest
import torch
from torch import nn

from raysparse.structured import fold_batchnorm
from raysparse.structured.channels import apply_plan
from raysparse.structured.implants import ImplantedConv, implant_conv
from tests.structured.test_channels import built, example, planned

# float32: folding reorders a handful of multiplications per weight; outputs of order 1-10
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def randomize_implants(model: nn.Module) -> None:
    """Zero-initialised implants compute 0; random weights make folding into them observable."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ImplantedConv):
                for parameter in module.implant.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("name", ["resnet20", "vgg16"])
@torch.no_grad()
def test_folded_zoo_model_equals_the_original_in_eval(name):
    model = built(name)  # BatchNorm with random statistics and affine parameters
    before = copy.deepcopy(model.state_dict())
    model.train()
    folded = fold_batchnorm(model)
    assert batchnorms(model) > 0 and batchnorms(folded) == 0
    assert not folded.training and model.training  # an eval copy; the original keeps its mode
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    torch.testing.assert_close(folded(example()), model.eval()(example()), **TOLERANCE)


@pytest.mark.parametrize("kind", ["zero", "lowrank"])
@torch.no_grad()
def test_folded_hap_compacted_resnet_with_implants_equals_the_original(kind):
    model = built("resnet20")
    _, plan = planned(model, ratio=0.4, implant_ratio=0.3, implant_kind=kind)
    apply_plan(model, example(), plan)
    randomize_implants(model)
    implanted = [m for m in model.modules() if isinstance(m, ImplantedConv)]
    assert implanted, "the plan must implant some channels for this test to bite"
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 0  # the BatchNorm after an implanted conv is folded into both branches
    torch.testing.assert_close(folded(example()), model(example()), **TOLERANCE)


@torch.no_grad()
def test_implant_channels_out_of_order_fold_onto_their_own_batchnorm_rows():
    torch.manual_seed(0)
    model = nn.Sequential(implant_conv(nn.Conv2d(4, 8, 3, padding=1), [6, 1, 3], "lowrank"), nn.BatchNorm2d(8))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model[1].weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 4, 9, 9)
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == 0
    torch.testing.assert_close(folded(x), model(x), **TOLERANCE)


class Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it) around a Sequential conv -> BN pair."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())

    def forward(self, x):
        out = self.body(x)
        return out if out.sum() > 0 else -out


class ReadTwice(nn.Module):
    """A conv whose output feeds a BatchNorm and a shortcut: folding would change the shortcut."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.shared = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))

    def forward(self, x):
        y = self.conv(x)
        return self.shared(self.shared(self.bn(y) + y))  # the shared pair is called twice


@pytest.mark.parametrize("cls, left", [(Untraceable, 0), (ReadTwice, 2)])
@torch.no_grad()
def test_only_safe_pairs_are_folded_and_outputs_stay(cls, left):
    torch.manual_seed(0)
    model = cls()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(model)
    assert batchnorms(folded) == left
    torch.testing.assert_close(folded(x), model(x), **TOLERANCE)
