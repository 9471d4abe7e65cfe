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
