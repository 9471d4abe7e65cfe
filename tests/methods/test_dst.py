"""DST: the step's estimator, the reset rule, density falling with alpha, the target mode, the
plain exported model."""

import pytest
import torch
from torch.nn.utils import parametrize

from raysparse.config import load_config
from raysparse.methods.dst import DST, BinaryStep
from raysparse.train import fit
from tests.conftest import small_config


def test_step_gradient_is_the_seed_estimator_at_chosen_points():
    x = torch.tensor([-1.5, -0.7, -0.3, 0.0, 0.2, 0.4, 0.5, 1.0, 1.2], requires_grad=True)
    y = BinaryStep.apply(x)
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    y.sum().backward()
    expected = [0.0, 0.4, 2 - 4 * 0.3, 2.0, 2 - 4 * 0.2, 2 - 4 * 0.4, 0.4, 0.4, 0.0]
    assert x.grad.tolist() == pytest.approx(expected)


def attached(**sparsity):
    cfg = load_config(small_config("dst", **sparsity))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = DST(cfg.sparsity, seed=0)
    method.attach(model, optimizer, steps_per_epoch=10, total_steps=100)
    return method, model, optimizer


def test_thresholds_are_trainable_and_masked_weights_still_get_gradients():
    method, model, optimizer = attached()
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["weight_decay"] == 0.0
    gate = method.gates["1"]
    gate.threshold.data.fill_(0.1)  # masks about half of layer 1
    original = model[1].parametrizations.weight.original
    loss = model(torch.randn(8, 1, 8, 8)).square().sum() + method.regularization_loss()
    loss.backward()
    masked = ~gate.mask(original)
    assert masked.any() and torch.all(model[1].weight[masked] == 0)
    assert original.grad[masked].abs().sum() > 0  # through the estimator: masked weights can come back
    assert gate.threshold.grad.abs().sum() > 0


def test_reset_rule_makes_a_collapsed_layer_dense_again():
    method, model, _ = attached()
    method.gates["3"].threshold.data.fill_(10.0)  # masks everything in layer 3
    assert float(method.gates["3"].mask(model[3].parametrizations.weight.original).float().mean()) == 0.0
    method.reset_collapsed_layers()
    assert torch.all(method.gates["3"].threshold == 0)
    assert torch.all(method.gates["1"].threshold == 0)  # untouched (was already 0)


def test_export_is_a_plain_model_with_the_same_outputs():
    method, model, _ = attached()
    method.gates["1"].threshold.data.fill_(0.05)
    plain = method.export(model)
    assert not parametrize.is_parametrized(plain[1])
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(plain(x), model(x))
    assert set(plain.state_dict()) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert (plain[1].weight == 0).float().mean() > 0.2


def test_free_mode_density_falls_during_training_with_alpha():
    densities = []
    cfg = small_config("dst", density_control="free", alpha=5e-3)
    cfg["epochs"] = 6
    fit(cfg, lambda m, ctx: densities.append(m["density"]))
    assert densities[-1] < densities[0] < 1.0 and densities[-1] < 0.8


def test_lenet300_on_digits_reaches_93_percent_at_10_percent_density_within_1pp_of_target():
    cfg = small_config("dst", final_sparsity=0.92, prune_end=15, update_frequency=10, alpha=5e-4)
    cfg["model"] = {"name": "lenet300"}
    cfg["epochs"] = 25
    reports = []
    final = fit(cfg, lambda m, ctx: reports.append(m))
    assert abs(final["density"] - 0.08) <= 0.01  # target-density mode: within 1 percentage point
    assert final["density"] <= 0.10
    assert final["test_accuracy"] >= 0.93
    assert reports[5]["density"] < 1.0  # density came down while training, not only at the projection


@pytest.mark.parametrize("spec, shape", [({"name": "resnet20"}, (3, 32, 32)), ("torchvision:resnet18", (1, 32, 32))])
def test_converts_zoo_and_torchvision_models_in_place(spec, shape):
    from raysparse.zoo import build_model

    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    method = DST(load_config(small_config("dst")).sparsity, seed=0)
    method.attach(model, optimizer, steps_per_epoch=10, total_steps=100)
    assert len(method.gates) == convs  # every Conv/Linear, first and classifier included (as the seed)
    for gate in method.gates.values():
        gate.threshold.data.fill_(0.02)
    model.eval()
    x = torch.randn(2, *shape)
    plain = method.export(model)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert torch.allclose(plain(x), model(x), atol=1e-5)
