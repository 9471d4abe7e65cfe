import pytest
import torch
from torch import nn
from torch.func import functional_call

from raysparse.structured import channel_hessian_traces

cross_entropy = nn.functional.cross_entropy


def loss_of_batch(model):
    """A task's batch loss for (x, y) classification batches."""
    return lambda batch: cross_entropy(model(batch[0]), batch[1])


def tiny_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    return model, x, y


def exact_layer_hessian(model, x, y, name):
    """The exact Hessian of the loss w.r.t. one flattened weight (the layer's own block)."""
    params = dict(model.named_parameters())
    weight = params[name]

    def loss_of(flat):
        return cross_entropy(functional_call(model, {**params, name: flat.view_as(weight)}, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, weight.detach().flatten())


def relative_error(estimate, truth):
    return ((estimate.double() - truth).norm() / truth.norm()).item()


def test_matches_exact_channel_block_traces_and_not_wrong_ones():
    model, x, y = tiny_mlp()
    estimate = channel_hessian_traces(
        model, loss_of_batch(model), [(x, y)], samples=4000, min_batches=1, generator=torch.Generator().manual_seed(0)
    )
    assert set(estimate) == {"0", "2"}
    for layer in ["0", "2"]:
        out_channels = model.get_submodule(layer).out_features
        hessian = exact_layer_hessian(model, x, y, f"{layer}.weight")
        block_traces = hessian.diagonal().view(out_channels, -1).sum(1)
        # what v = all-ones would give: every entry of the channel's rows, off-diagonal included
        row_sums = hessian.sum(1).view(out_channels, -1).sum(1)
        assert estimate[layer].shape == (out_channels,)
        # a per-layer error of 2-5% across seeds at 4000 draws; the wrong answers are >= 22% away
        assert relative_error(estimate[layer], block_traces) < 0.1
        assert relative_error(estimate[layer], block_traces.flip(0)) > 0.1
        assert relative_error(estimate[layer], row_sums) > 0.1


def test_same_seed_same_estimate_different_seed_different():
    model, x, y = tiny_mlp()

    def estimate(seed):
        generator = torch.Generator().manual_seed(seed)
        return channel_hessian_traces(model, loss_of_batch(model), [(x, y)], samples=2, min_batches=1,
                                      generator=generator)

    first, again, other = estimate(1), estimate(1), estimate(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_stopping_rule_counts_batches():
    model, x, y = tiny_mlp()
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]

    def batches_used(**options):
        info = {}
        channel_hessian_traces(model, loss_of_batch(model), batches, samples=2, info=info, **options)
        assert info["draws"] == 2 * info["batches"]
        return info["batches"]

    assert batches_used(tol=1e9, min_batches=3) == 3
    assert batches_used(tol=1e9) == 2  # the default min_batches
    assert batches_used(tol=0.0) == 4
    assert batches_used(tol=0.0, max_batches=3) == 3


def test_conv_net_keys_lengths_and_modes_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    running_mean = model[1].running_mean.clone()
    batches = [(torch.randn(8, 2, 6, 6), torch.randint(0, 5, (8,))) for _ in range(3)]
    traces = channel_hessian_traces(model, loss_of_batch(model), batches, generator=torch.Generator().manual_seed(0))
    assert {k: v.shape for k, v in traces.items()} == {"0": (3,), "4": (5,)}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in traces.values())
    assert model.training and model[0].training and not model[1].training
    model[1].train()
    traces = channel_hessian_traces(model, loss_of_batch(model), batches)
    assert model[1].training
    assert torch.equal(model[1].running_mean, running_mean)  # estimation ran in eval mode


@pytest.mark.parametrize(
    ("option", "message"),
    [({"samples": 0}, "samples=0"), ({"min_batches": 3, "max_batches": 2}, "max_batches=2"), ({"tol": -1}, "tol=-1")],
)
def test_bad_options_name_the_value(option, message):
    model, x, y = tiny_mlp()
    with pytest.raises(ValueError, match=message):
        channel_hessian_traces(model, loss_of_batch(model), [(x, y)], **option)


def test_empty_batches_is_an_error():
    model, _, _ = tiny_mlp()
    with pytest.raises(ValueError, match="empty"):
        channel_hessian_traces(model, loss_of_batch(model), [])
