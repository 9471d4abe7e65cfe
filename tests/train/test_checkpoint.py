"""A run stopped after epoch k and resumed from its checkpoint ends bit-identical to an
uninterrupted run: masks, weights and optimizer state."""

from pathlib import Path

import pytest
import torch

from raysparse.errors import ConfigError
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
    with pytest.raises(ConfigError, match=r"checkpoint\.pt': its weights differ from the sha256 fingerprints"):
        fit(cfg, resume_from=tmp_path)  # refused as it is read, before a network is built


def test_a_truncated_checkpoint_or_one_of_a_finished_run_is_one_config_error(tmp_path):
    cfg = small_config("gmp")
    cfg["epochs"] = 2
    fit(cfg, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="holds epoch 2 of 2: nothing left to train") as caught:
        fit(cfg, resume_from=tmp_path)
    assert caught.value.field == "resume_from"
    whole = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=r"'.*torn\.pt' is not a torch\.save file \(truncated"):
        fit({**cfg, "epochs": 3}, resume_from=tmp_path / "torn.pt")


class RunsCode:
    """What a hostile file carries: unpickling it would call ``touch``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_state_dict_file_with_code_in_it_is_refused_without_running_it_or_advising_weights_only_false(tmp_path):
    from raysparse.train.checkpoint import load_state_dict_file

    marker = tmp_path / "code_ran"
    torch.save({"0.weight": torch.zeros(2), "payload": RunsCode(marker)}, tmp_path / "hostile.pt")
    with pytest.raises(ConfigError) as caught:
        load_state_dict_file(tmp_path / "hostile.pt", "init_from")
    assert not marker.exists()
    assert caught.value.field == "init_from" and "holds objects other than tensors" in caught.value.message
    assert "refused for safety" in caught.value.message and "weights_only" not in str(caught.value)
    (tmp_path / "notes.pt").write_text("not a torch file")
    with pytest.raises(ConfigError, match="is not a torch.save file"):
        load_state_dict_file(tmp_path / "notes.pt", "init_from")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="holds a list, not a state_dict"):
        load_state_dict_file(tmp_path / "list.pt", "init_from")


def test_state_hash_sees_names_values_and_dtypes():
    from raysparse.train.checkpoint import state_hash

    state = {"a": torch.zeros(3), "n": torch.tensor(7)}
    assert state_hash(state) == state_hash({k: v.clone() for k, v in state.items()})
    seven = torch.tensor(7)
    for other in ({"b": torch.zeros(3), "n": seven}, {"a": torch.tensor([0.0, 0.0, 1e-30]), "n": seven},
                  {"a": torch.zeros(3, dtype=torch.float64), "n": seven}, {"a": torch.zeros(3), "n": torch.tensor(8)}):
        assert state_hash(other) != state_hash(state)


def test_a_checkpoint_restored_under_another_learning_rate_trains_on_at_it(tmp_path):
    """PBT perturbs optimizer.lr and restores another trial's checkpoint, whose optimizer and
    schedule state hold the rate it was saved with: the configured one wins, on the same schedule."""
    cfg = small_config("granet")
    cfg.update(epochs=2, measure_latency=False)

    def stop_after_one(metrics, ctx):
        if metrics["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop_after_one, checkpoint_dir=tmp_path)
    rates = {}
    same = fit(cfg, lambda m, ctx: rates.setdefault(("same", m["epoch"]), m["lr"]), resume_from=tmp_path)
    cfg["optimizer"]["lr"] *= 0.5
    fit(cfg, lambda m, ctx: rates.setdefault(("half", m["epoch"]), m["lr"]), resume_from=tmp_path)
    # cosine: the rate at an epoch is the base rate times the same factor
    assert rates[("same", 2)] < 0.1 and rates[("half", 2)] == pytest.approx(rates[("same", 2)] / 2)
    assert same["epoch"] == 2
