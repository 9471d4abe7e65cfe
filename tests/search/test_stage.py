"""A sweep's ``pretrain:`` block, validated at load (no Ray, no MLflow here), and what the dense
stage gives each trial's config."""

import dataclasses

import pytest

from raysparse.errors import ConfigError
from raysparse.search.spaces import load_sweep
from tests.search.test_spaces import sweep

STAGE_FILE = "/storage/t/pretrain/model.pt"


def launched(raw):
    """The sweep as the driver launches it: the stage's file named."""
    return dataclasses.replace(load_sweep(raw), pretrain_file=STAGE_FILE)


@pytest.mark.parametrize("pretrain, field, message", [
    ({"epoch": 20}, "pretrain.epoch", r"unknown key 'epoch'.*did you mean 'epochs'"),
    ({"epochs": 0}, "pretrain.epochs", r"got 0; allowed: an integer >= 1"),
    ({"optimizer": {"lr": -0.1}}, "pretrain.optimizer.lr", "allowed: a number > 0"),
    ({"optimizer": {"name": "adma"}}, "pretrain.optimizer.name", "did you mean 'adam'"),
    ({"sparsity": {"method": "gmp"}}, "pretrain.sparsity", "the dense stage is dense"),
    ({"model": {"name": "mlp", "hidden": [8]}}, "pretrain.model", "the trials load its weights"),
    ({"init_from": "pretrain"}, "pretrain.init_from", "the dense stage itself"),
    ({"init_from": "missing.pt"}, "pretrain.init_from", "allowed: an existing state_dict file"),
    ([20], "pretrain", r"expected a mapping of core config keys.*got \[20\]"),
])
def test_a_bad_pretrain_block_names_its_key(pretrain, field, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_sweep(sweep(pretrain=pretrain))
    assert error.value.field == field


def test_the_stage_is_base_merged_with_the_block_and_dense():
    loaded = load_sweep(sweep(pretrain={"epochs": 7, "optimizer": {"lr": 0.05}}))
    assert loaded.pretrain["sparsity"] == {"method": "dense"}
    assert loaded.pretrain["optimizer"]["lr"] == 0.05
    assert loaded.pretrain["optimizer"]["momentum"] == loaded.base["optimizer"]["momentum"]  # merged, not replaced
    assert loaded.pretrain["model"] == loaded.base["model"]
    assert loaded.pretrain_epochs == 7 and load_sweep(sweep()).pretrain_epochs == 0


@pytest.mark.parametrize("where", ["base", "space"])
def test_naming_the_stage_needs_a_pretrain_block(where):
    raw = sweep()
    if where == "base":
        raw["base"]["init_from"] = "pretrain"
    else:
        raw["space"]["robustness.reference"] = {"choice": ["pretrain"]}
        raw["base"]["robustness"] = {"corruptions": ["contrast"]}
    with pytest.raises(ConfigError, match="the sweep's dense stage, but the sweep declares none") as error:
        load_sweep(raw)
    assert error.value.field == ("base.init_from" if where == "base" else "space.robustness.reference")


def test_methods_that_prune_a_trained_network_start_from_the_stage_unless_their_config_says_otherwise():
    raw = sweep(pretrain={"epochs": 2})
    raw["space"] = {"sparsity.method": {"choice": ["oneshot", "wanda", "hap", "gmp", "dense"]}}
    stage = launched(raw)
    init = {m: stage.trial_config({"sparsity.method": m}).get("init_from")
            for m in ("oneshot", "wanda", "hap", "gmp", "dense")}
    assert init == {"oneshot": STAGE_FILE, "wanda": STAGE_FILE, "hap": STAGE_FILE, "gmp": None, "dense": None}
    raw["space"]["init_from"] = {"choice": [None, "pretrain"]}  # from scratch, or from the stage
    stage = launched(raw)
    assert stage.trial_config({"sparsity.method": "oneshot", "init_from": None})["init_from"] is None
    assert stage.trial_config({"sparsity.method": "gmp", "init_from": "pretrain"})["init_from"] == STAGE_FILE
    assert load_sweep(raw).trial_config({"sparsity.method": "gmp", "init_from": "pretrain"})["init_from"] == \
        "pretrain"  # not launched yet: no file to name
    no_stage = sweep()
    no_stage["space"] = {"sparsity.method": {"choice": ["oneshot"]}}
    assert "init_from" not in load_sweep(no_stage).trial_config({"sparsity.method": "oneshot"})


def test_robustness_compares_with_the_stage_unless_a_reference_is_set(tmp_path):
    raw = sweep(pretrain={"epochs": 2}, objectives={"val_accuracy": "max", "mean_excess_error": "min"},
                early_stopping=False)
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "split": "val"}
    # accepted: a reference-compared objective with no reference file, since the stage is one
    config = launched(raw).trial_config({"sparsity.method": "gmp"})
    assert config["robustness"]["reference"] == STAGE_FILE
    raw["base"]["robustness"]["reference"] = None  # said: no reference, so nothing to compare with
    with pytest.raises(ConfigError, match="compares with a dense reference network") as error:
        load_sweep(raw)
    assert error.value.field == "objectives.mean_excess_error"


def test_the_stage_never_compares_with_itself():
    raw = sweep(pretrain={"epochs": 2})
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "reference": "pretrain"}
    raw["base"]["init_from"] = "pretrain"
    loaded = load_sweep(raw)
    assert loaded.pretrain["robustness"]["reference"] is None and loaded.pretrain["init_from"] is None
    assert loaded.base["init_from"] == "pretrain"  # a name, not made a path like the files base names


def test_the_stage_needs_a_storage_path_the_trials_read_as_files():
    with pytest.raises(ConfigError, match="storage_path, which is a URI") as error:
        load_sweep(sweep(pretrain={"epochs": 2}, storage_path="s3://bucket/results"))
    assert error.value.field == "pretrain"
