"""A run stopped after epoch k and resumed from its checkpoint ends bit-identical to an
uninterrupted run: masks, weights and optimizer state."""

import pytest
import torch

from raysparse.train import fit
from raysparse.train.checkpoint import load_checkpoint
from tests.conftest import small_config


class Stop(Exception):
    pass


def final_state(path):
    state = load_checkpoint(path)
    return state["model"], state["method"]["masks"], state["optimizer"]


@pytest.mark.parametrize("method", ["granet", "set", "dst"])  # gradient growth, random growth, thresholds
def test_resume_is_bit_identical(method, tmp_path):
    cfg = small_config(method)
    cfg["epochs"] = 5
    cfg["data"]["augment"] = False
    full = fit(cfg, checkpoint_dir=tmp_path / "full")

    def stop_after_two(metrics, ctx):
        if metrics["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop_after_two, checkpoint_dir=tmp_path / "part")
    assert load_checkpoint(tmp_path / "part")["epoch"] == 2
    resumed = fit(cfg, checkpoint_dir=tmp_path / "part", resume_from=tmp_path / "part")

    weights_a, masks_a, opt_a = final_state(tmp_path / "full")
    weights_b, masks_b, opt_b = final_state(tmp_path / "part")
    assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a)
    assert all(torch.equal(weights_a[n], weights_b[n]) for n in weights_a)
    momentum_a = [s["momentum_buffer"] for s in opt_a["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in opt_b["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum_a, momentum_b))
    assert resumed["val_accuracy"] == full["val_accuracy"]
    assert resumed["best_epoch"] == full["best_epoch"]


def test_checkpoint_loads_with_weights_only(tmp_path):
    cfg = small_config("rigl", prune_end=1)
    cfg["epochs"] = 1
    fit(cfg, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(state) >= {"model", "optimizer", "lr_schedule", "method", "rng", "epoch"}
    assert state["method"]["masks"]["1"].dtype == torch.bool


def test_a_checkpoint_is_fingerprinted_and_a_resume_shows_the_same_masks_and_weights(tmp_path):
    from raysparse.train.checkpoint import state_hash

    cfg = small_config("granet")
    cfg["epochs"] = 3
    rows = []

    def save_at_two(metrics, ctx):
        rows.extend(ctx.mask_events)
        if metrics["epoch"] == 2:
            ctx.save_checkpoint(tmp_path)  # as a trial does, for its retries
            rows.extend(ctx.masks.drain_events())
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, save_at_two)
    saved = load_checkpoint(tmp_path)
    checkpoint = rows[-1]
    assert checkpoint.reason == "checkpoint at epoch 2"
    assert saved["fingerprints"] == {"masks": checkpoint.hash, "weights": checkpoint.weights_hash}
    assert checkpoint.weights_hash == state_hash(saved["model"])

    resumed = []
    fit(cfg, lambda m, ctx: resumed.extend(ctx.mask_events), resume_from=tmp_path)
    resume = resumed[0]
    assert resume.reason == "resume at epoch 2"
    assert (resume.hash, resume.weights_hash) == (checkpoint.hash, checkpoint.weights_hash)


def test_a_checkpoint_that_gives_back_other_weights_is_refused(tmp_path):
    cfg = small_config("gmp")
    cfg["epochs"] = 2
    fit(cfg, checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path)
    weight = next(name for name in state["model"] if name.endswith("weight"))
    state["model"][weight].view(-1)[0] += 1.0  # a torn or tampered file: the bytes no longer match
    torch.save(state, tmp_path / "checkpoint.pt")
    cfg["epochs"] = 3
    with pytest.raises(RuntimeError, match="the checkpoint gave back other weights than it saved"):
        fit(cfg, resume_from=tmp_path)


def test_state_hash_sees_names_values_and_dtypes():
    from raysparse.train.checkpoint import state_hash

    state = {"a": torch.zeros(3), "n": torch.tensor(7)}
    assert state_hash(state) == state_hash({k: v.clone() for k, v in state.items()})
    seven = torch.tensor(7)
    for other in ({"b": torch.zeros(3), "n": seven}, {"a": torch.tensor([0.0, 0.0, 1e-30]), "n": seven},
                  {"a": torch.zeros(3, dtype=torch.float64), "n": seven}, {"a": torch.zeros(3), "n": torch.tensor(8)}):
        assert state_hash(other) != state_hash(state)
