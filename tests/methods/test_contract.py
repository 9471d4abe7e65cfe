"""The contract every registered method keeps (run over the registry, as Optuna tests samplers),
and a user's method given by import path from a package outside raysparse."""

import re
import textwrap

import pytest
import torch

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs
from raysparse.methods import METHODS, get_method
from raysparse.sparsity.masks import unpack_masks
from raysparse.tasks.classification import Classification
from raysparse.train import fit
from tests.conftest import small_config

USER_METHOD = "mylab.pruning:IterativeMagnitude"
ALL = [*sorted(METHODS), USER_METHOD]
USER_PACKAGE = textwrap.dedent('''
    """A lab's own method, written against raysparse's public API only."""
    from dataclasses import dataclass

    from raysparse import MethodOptions, SparseMethod
    from raysparse.errors import require


    @dataclass(frozen=True)
    class RoundsOptions(MethodOptions):
        rounds: int = 2  # magnitude-pruning rounds, evenly spaced up to prune_end

        def check(self, *, epochs):
            super().check(epochs=epochs)
            require(self.rounds >= 1, "sparsity.rounds", self.rounds, "an integer >= 1")


    class IterativeMagnitude(SparseMethod):
        name = "iterative_magnitude"
        Options = RoundsOptions

        def update_masks(self, step):
            rounds = self.options.rounds
            for k in range(1, rounds + 1):
                if step == self.prune_end_step * k // rounds:
                    density = 1.0 - self.config.final_sparsity * k / rounds
                    self.prune_by_magnitude(density, step, reason=f"round {k}")
''')


@pytest.fixture(scope="module", autouse=True)
def user_package(tmp_path_factory):
    """``mylab/pruning.py`` in a directory of its own, importable as a user's code is in a trial."""
    root = tmp_path_factory.mktemp("user_code")
    (root / "mylab").mkdir()
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "pruning.py").write_text(USER_PACKAGE)
    add_import_dirs([root])
    return root


def build(cfg, model, optimizer, *, steps_per_epoch, total_steps, seed=0):
    """A method as the loop sets it up: built from its config, bound to data, attached."""
    method = get_method(cfg.sparsity.method)(cfg.sparsity, seed=seed)
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    method.bind(task=Classification(), train_batches=lambda: iter([(x, y)] * 2),
                example_input=lambda: torch.zeros(1, 1, 8, 8))
    method.attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    return method


def effective_weight(model, name):
    """What the forward pass uses: the parameter, or a parametrized (DST) weight."""
    return model.get_submodule(name).weight


def run(method, **sparsity):
    seen = {}

    def report(metrics, ctx):
        for name, mask in ctx.masks.masks.items():  # the weights the network computes with are zero
            assert torch.all(effective_weight(ctx.model, name)[~mask] == 0), (method, name, metrics["epoch"])
        seen.update(hash=ctx.masks.content_hash(), masks=ctx.masks, model=ctx.model)

    final = fit(small_config(method, **sparsity), report)
    return final, seen


@pytest.mark.parametrize("method", ALL)
def test_density_reaches_target_and_same_seed_same_masks(method):
    final, seen = run(method)
    target = 1.0 if method == "dense" else 0.2
    layers = len(seen["masks"].masks)
    tolerance = max(layers / seen["masks"].count()[1], get_method(method).density_tolerance)
    assert abs(final["density"] - target) <= tolerance
    again, seen_again = run(method)
    assert seen_again["hash"] == seen["hash"]
    assert again["val_accuracy"] == final["val_accuracy"]


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_stay_zero_after_optimizer_step(method, optimizer):
    cfg = small_config(method, final_sparsity=0.5, prune_end=0)  # pruned from the first step on
    cfg["epochs"] = 1
    cfg["optimizer"] = {"name": optimizer, "lr": 0.01, "weight_decay": 0.1, "momentum": 0.0}
    built = load_config(cfg)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    from raysparse.train.optim import build_optimizer

    opt = build_optimizer(model, built.optimizer)
    method_obj = build(built, model, opt, steps_per_epoch=4, total_steps=4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for step in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        method_obj.after_backward(step)
        opt.step()
        method_obj.after_optimizer_step(step)
        method_obj.on_epoch_end(0)  # DST syncs its mask view at epoch ends
        for name, mask in method_obj.masks.masks.items():
            assert torch.all(effective_weight(model, name)[~mask] == 0)
    if method not in ("dense", "oneshot", "dst", "hap"):  # these prune at epoch ends or learn masks
        assert method_obj.masks.density() < 0.99


@pytest.mark.parametrize("method", ["granet", "rigl", "set"])
def test_regrown_weights_start_at_zero_with_zero_momentum(method):
    cfg = load_config(small_config(method, initial_sparsity=0.5, final_sparsity=0.5))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    m = build(cfg, model, opt, steps_per_epoch=10, total_steps=100)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _step in range(3):  # build up momentum everywhere
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        m.after_optimizer_step(1)  # not an update step
    before = m.masks.snapshot()
    assert not all(bool(v.all()) for v in before.values())
    m.regrow(step=5)
    event = m.masks.events[-1]
    assert event.reason == "regrow" and event.churn > 0
    for name, weight in m.masks.weights.items():
        grown = m.masks.masks[name] & ~before[name]
        assert grown.any() or bool(before[name].all())  # ERK may leave a small layer dense
        assert torch.all(weight[grown] == 0)
        assert torch.all(opt.state[weight]["momentum_buffer"][grown] == 0)
    assert m.masks.count()[0] == sum(int(v.sum()) for v in before.values())  # density unchanged


def mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@pytest.mark.parametrize("method", ALL)
def test_state_dict_round_trips_through_a_weights_only_file(method, tmp_path):
    cfg = load_config(small_config(method, initial_sparsity=0.5))
    torch.manual_seed(0)
    model = mlp()
    original = build(cfg, model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=10, total_steps=100)
    if method != "dense":
        original.masks.update(original.random_masks(0.3), step=1, reason="test")
    torch.rand(5, generator=original.generator)  # advance the generator past its seed
    torch.save(original.state_dict(), tmp_path / "m.pt")

    twin_model = mlp()
    twin = build(cfg, twin_model, torch.optim.SGD(twin_model.parameters(), lr=0.1), steps_per_epoch=10,
                 total_steps=100, seed=123)
    twin_model.load_state_dict(model.state_dict())  # as a checkpoint restores it: after attach
    twin.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert twin.masks.content_hash() == original.masks.content_hash()
    assert torch.equal(twin.generator.get_state(), original.generator.get_state())


def test_a_user_method_by_import_path_reads_its_own_options():
    events = []
    fit(small_config(USER_METHOD, rounds=4), lambda m, ctx: events.extend(ctx.mask_events))
    assert [e.reason for e in events] == ["round 1", "round 2", "round 3", "round 4"]
    assert events[-1].density == pytest.approx(0.2, abs=0.002)


# 2:4 at its own density N/M (every group keeps exactly 2); 4x4 blocks, which the 10-class head
# [10, 32] does not divide into: it stays unstructured
PATTERNS = {"2:4": 0.5, "block:4x4": 0.8}


def kept_per_unit(mask, pattern):
    """Kept weights per N:M group or per block of ``mask.flatten(1)``; None where the shape does not divide."""
    matrix = mask.flatten(1).int()
    rows, columns = matrix.shape
    if pattern == "2:4":
        return matrix.reshape(rows, -1, 4).sum(-1) if columns % 4 == 0 else None
    if rows % 4 or columns % 4:
        return None
    return matrix.reshape(rows // 4, 4, columns // 4, 4).sum((1, 3))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ALL)
def test_every_mask_update_keeps_the_pattern_or_the_method_refuses_it(method, pattern):
    config = small_config(method, pattern=pattern, final_sparsity=PATTERNS[pattern])
    if not get_method(method).takes_pattern:
        refused = rf"^sparsity\.pattern: got '{pattern}', but method {re.escape(repr(method))} cannot keep a pattern"
        with pytest.raises(ConfigError, match=refused) as err:
            load_config(config)
        assert "\n" not in str(err.value)
        return
    events, seen = [], {}

    def report(metrics, ctx):
        events.extend(ctx.mask_events)
        seen["masks"] = ctx.masks.snapshot()

    if pattern == "block:4x4":
        left_out = r"sparsity\.pattern 'block:4x4': 1 layer\(s\) stay unstructured.*: 5 \[10, 32\]$"
        with pytest.warns(UserWarning, match=left_out):
            final = fit(config, report)
    else:
        final = fit(config, report)
    assert events
    for event in events:  # after every update, prune and regrow alike
        for name, mask in unpack_masks(event.packed).items():
            counts = kept_per_unit(mask, pattern)
            if counts is not None:
                assert bool((counts <= 2).all() if pattern == "2:4" else ((counts == 0) | (counts == 16)).all()), (
                    event.reason, event.step, name)
    if method in ("granet", "rigl", "set"):
        assert any(e.reason == "regrow" and e.churn > 0 for e in events)
    sizes = {n: m.numel() for n, m in seen["masks"].items()}
    if pattern == "2:4":  # density N/M on every layer: exactly 2 of every 4
        for name, mask in seen["masks"].items():
            assert bool((kept_per_unit(mask, pattern) == 2).all()), name
        assert final["density"] == 0.5 and final["pattern_coverage"] == 1.0
    else:
        assert final["pattern_coverage"] == pytest.approx(1 - sizes["5"] / sum(sizes.values()))
        assert abs(final["density"] - 0.2) <= len(sizes) * 16 / sum(sizes.values())  # whole blocks per layer
