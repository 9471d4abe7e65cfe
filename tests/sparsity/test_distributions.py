import pytest
import torch
from torch import nn

import raysparse
from raysparse.errors import ConfigError
from raysparse.sparsity.distributions import (
    DISTRIBUTIONS,
    erdos_renyi_kernel,
    explicit,
    global_magnitude,
    kept_counts,
    uniform,
)


def shapes(*dims):
    return {f"l{i}": torch.zeros(d) for i, d in enumerate(dims)}


def test_erk_hand_computed():
    # raw = sum(dims)/prod(dims): 6/8 and 5/6; eps = 7 / (0.75*8 + 5/6*6) = 7/11
    got = erdos_renyi_kernel(shapes((2, 4), (3, 2)), 0.5)
    assert got["l0"] == pytest.approx(0.75 * 7 / 11)
    assert got["l1"] == pytest.approx(5 / 6 * 7 / 11)


def test_erk_layer_over_one_becomes_dense_and_eps_is_resolved():
    # l1 would get eps*0.6 = 1.003 > 1, so it is dense; then l0 gets (204 - 20) / 1000
    got = erdos_renyi_kernel(shapes((10, 100), (2, 10)), 0.2)
    assert got["l1"] == 1.0
    assert got["l0"] == pytest.approx(0.184)


def test_erk_conv_uses_all_dims():
    got = erdos_renyi_kernel(shapes((16, 3, 3, 3), (32, 16, 3, 3)), 0.1)
    ratio = got["l0"] / got["l1"]
    assert ratio == pytest.approx((25 / 432) / (54 / 4608))


@pytest.mark.parametrize("name", sorted(set(DISTRIBUTIONS) - {"explicit"}))
@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 0.95])
def test_total_kept_matches_target_within_one_per_layer(name, density):
    torch.manual_seed(0)
    weights = {"a": torch.randn(64, 1, 3, 3), "b": torch.randn(128, 64, 3, 3), "c": torch.randn(10, 128)}
    sizes = {n: w.numel() for n, w in weights.items()}
    counts = kept_counts(DISTRIBUTIONS[name](weights, density, dense_layers=frozenset({"a"})), sizes)
    assert counts["a"] == sizes["a"]
    assert abs(sum(counts.values()) - density * sum(sizes.values())) <= len(weights)


def test_uniform_shares_budget_left_by_dense_layers():
    got = uniform(shapes((10, 10), (10, 10)), 0.6, dense_layers=frozenset({"l0"}))
    assert got == {"l0": 1.0, "l1": pytest.approx(0.2)}


def test_global_is_one_threshold():
    weights = {"a": torch.tensor([[0.1, 0.9], [0.8, 0.2]]), "b": torch.tensor([[0.5, 0.05, 0.7, 0.3]])}
    got = global_magnitude(weights, 0.5)  # keep the 4 largest: .9 .8 .7 .5
    assert got == {"a": 0.5, "b": 0.5}


def test_explicit_keeps_given_and_fills_the_rest():
    got = explicit(shapes((10, 10), (10, 10)), 0.5, densities={"l0": 0.2})
    assert got == {"l0": 0.2, "l1": pytest.approx(0.8)}
    with pytest.raises(ConfigError, match="'nope' is not a prunable layer"):
        explicit(shapes((10, 10)), 0.5, densities={"nope": 0.1})


def test_dense_layers_beyond_budget_is_an_error():
    with pytest.raises(ConfigError, match="dense_layers"):
        uniform(shapes((100, 100), (2, 2)), 0.1, dense_layers=frozenset({"l0"}))


def test_public_layer_densities_on_a_model():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16 * 30 * 30, 10))
    got = raysparse.layer_densities(model, 0.1, "erk", dense_layers=["first"])
    assert set(got) == {"0", "2"} and got["0"] == 1.0 and got["2"] < 0.1
    with pytest.raises(ConfigError, match="unknown distribution 'erkk'.*did you mean 'erk'"):
        raysparse.layer_densities(model, 0.1, "erkk")
    with pytest.raises(ConfigError, match="'fc9' matches no prunable layer"):
        raysparse.layer_densities(model, 0.1, dense_layers=["fc9"])
