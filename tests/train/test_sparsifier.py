"""The contract through a Sparsifier: every registered method trains in a plain loop of the user's
own (digits, an MLP, torch's DataLoader), or refuses with one line naming sparsity.method."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from raysparse import Sparsifier
from raysparse.errors import ConfigError
from raysparse.methods import METHODS

ALL = sorted(METHODS)
EPOCHS = 4


def digits_loader(generator):
    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    return DataLoader(TensorDataset(x, torch.from_numpy(bunch.target)), batch_size=64, shuffle=True,
                      generator=generator)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def train(method, check_every_step=True, **options):
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = digits_loader(torch.Generator().manual_seed(0))
    sparsity = {"method": method, "final_sparsity": 0.8, "prune_end": 2, "update_frequency": 5, **options}
    calibration = digits_loader(torch.Generator().manual_seed(1))  # wanda's activation norms
    sparsifier = Sparsifier(model, optimizer, sparsity, steps_per_epoch=len(loader), epochs=EPOCHS,
                            train_batches=lambda: iter(calibration))
    for _ in range(EPOCHS):
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y) + sparsifier.penalty()
            loss.backward()
            optimizer.step()
            sparsifier.step()
            # DST's masks follow its trainable thresholds and are read at epoch ends; the others' always hold
            if check_every_step and sparsifier.masks.apply_to_weights:
                assert_pruned_weights_are_zero(model, sparsifier)
        assert_pruned_weights_are_zero(model, sparsifier)
    return model, sparsifier


def assert_pruned_weights_are_zero(model, sparsifier):
    for name, mask in sparsifier.masks.masks.items():  # what the network computes with (DST: the masked weight)
        assert torch.all(model.get_submodule(name).weight[~mask] == 0), name


@pytest.mark.parametrize("method", ALL)
def test_every_method_reaches_its_density_in_a_loop_of_your_own_or_refuses(method):
    if getattr(METHODS[method], "rebuilds_model", False):
        with pytest.raises(ConfigError, match=rf"^sparsity\.method: '{method}' rebuilds the model's structure"):
            train(method)
        return
    model, sparsifier = train(method)
    target = 1.0 if method == "dense" else 0.2
    kept, total = sparsifier.masks.count()
    tolerance = max(len(sparsifier.masks.masks) / total, METHODS[method].density_tolerance)
    assert abs(sparsifier.density - target) <= tolerance
    assert sparsifier.density == pytest.approx(kept / total)
    assert set(sparsifier.layer_density()) == {"1", "3", "5"}
    plain = sparsifier.export()
    assert plain is not model and not any("parametrizations" in n for n, _ in plain.named_modules())
    for name, mask in sparsifier.masks.masks.items():
        weight = plain.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter) and torch.all(weight[~mask] == 0)
    x = torch.randn(5, 1, 8, 8)
    model.eval()
    assert torch.allclose(plain.eval()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("method", ["granet", "rigl", "dst"])
def test_state_dict_round_trips_masks_and_the_step_count(method, tmp_path):
    model, sparsifier = train(method, check_every_step=False)
    torch.save(sparsifier.state_dict(), tmp_path / "s.pt")
    twin_model = mlp()
    optimizer = torch.optim.SGD(twin_model.parameters(), lr=0.05)
    twin = Sparsifier(twin_model, optimizer, {"method": method, "final_sparsity": 0.8, "prune_end": 2,
                                              "update_frequency": 5}, steps_per_epoch=29, epochs=EPOCHS)
    assert twin.masks.content_hash() != sparsifier.masks.content_hash()
    twin.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert twin.masks.content_hash() == sparsifier.masks.content_hash()
    assert twin.steps == sparsifier.steps == 29 * EPOCHS


def test_penalty_is_dst_s_term_and_zero_tensor_for_the_others():
    _, dst = train("dst", check_every_step=False)
    _, gmp = train("gmp", check_every_step=False)
    assert dst.penalty().requires_grad and float(dst.penalty().detach()) > 0
    assert isinstance(gmp.penalty(), torch.Tensor) and float(gmp.penalty()) == 0.0


def test_input_shape_is_read_from_the_first_forward_pass():
    model = mlp()
    sparsifier = Sparsifier(model, torch.optim.SGD(model.parameters(), lr=0.1), {"method": "gmp"},
                            steps_per_epoch=1, epochs=1)
    assert sparsifier.input_shape is None
    model(torch.zeros(3, 1, 8, 8))
    assert sparsifier.input_shape == (1, 8, 8)


def test_bad_arguments_name_the_field():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"^sparsity\.method: unknown method 'grant'.*did you mean 'granet'"):
        Sparsifier(model, optimizer, {"method": "grant"}, steps_per_epoch=10, epochs=2)
    with pytest.raises(ConfigError, match=r"^sparsity\.prune_end: got 5"):
        Sparsifier(model, optimizer, {"method": "gmp", "prune_end": 5}, steps_per_epoch=10, epochs=2)
    with pytest.raises(ConfigError, match=r"^steps_per_epoch: got 0; allowed: an integer >= 1"):
        Sparsifier(model, optimizer, {"method": "gmp"}, steps_per_epoch=0, epochs=2)


def test_a_pattern_holds_in_a_loop_of_your_own():
    _, sparsifier = train("rigl", check_every_step=False, final_sparsity=0.75, pattern="1:4")
    for name, mask in sparsifier.masks.masks.items():
        assert bool((mask.flatten(1).reshape(mask.shape[0], -1, 4).sum(-1) <= 1).all()), name
    assert sparsifier.density == pytest.approx(0.25, abs=1e-3)


class TinyAttention(nn.Module):
    """Linear, self-attention, Linear: the attention's in_proj_weight is masked by its parameter name."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Linear(8, 16), nn.Linear(16, 3)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("method", ["gmp", "static"])
def test_export_masks_attention_weights_named_by_parameter(method):
    torch.manual_seed(0)
    model = TinyAttention()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = Sparsifier(model, optimizer, {"method": method, "final_sparsity": 0.5, "prune_end": 1},
                            steps_per_epoch=2, epochs=2)
    x, y = torch.randn(4, 5, 8), torch.tensor([0, 1, 2, 0])
    for step in range(5):  # the last optimizer step is not followed by sparsifier.step(): export masks it
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step < 4:
            sparsifier.step()
    mask = sparsifier.masks.masks["attn.in_proj_weight"]
    assert not mask.all() and bool((model.attn.in_proj_weight[~mask] != 0).any())
    plain = sparsifier.export()
    assert torch.equal(plain.attn.in_proj_weight != 0, mask)
