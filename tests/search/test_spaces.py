"""Sweep files are validated completely before anything starts (no Ray, no MLflow here)."""

import copy

import pytest

from raysparse.errors import ConfigError
from raysparse.search.spaces import load_sweep
from tests.conftest import small_config


def sweep(**changes):
    raw = {
        "name": "t",
        "base": small_config("granet"),
        "space": {
            "sparsity.method": {"choice": ["gmp", "granet", "rigl"]},
            "sparsity.regrowth_ratio": {"uniform": [0.1, 0.6], "when": {"sparsity.method": ["granet", "rigl"]}},
            "optimizer.lr": {"loguniform": [0.01, 0.2]},
        },
        "objectives": {"val_accuracy": "max"},
        "num_samples": 4,
    }
    raw.update(copy.deepcopy(changes))
    return raw


def test_shipped_sweep_files_load(tmp_path):
    for name in ("quickstart", "quickstart_pareto", "digits_ddp", "dst_digits", "dst_free_digits", "hap_digits",
                 "patterns_digits", "latency_pareto_digits", "pbt_digits", "language_model"):
        assert load_sweep(f"search_spaces/{name}.yaml").num_samples >= 1
    assert load_sweep("search_spaces/quickstart.yaml").num_samples >= 8


@pytest.mark.parametrize(
    "name", ["granet_vs_gmp_cifar10", "rigl_set_cifar10", "layerwise_cifar10", "dst_cifar10", "hap_cifar10"]
)
def test_cifar_sweeps_load_once_the_data_is_there(name, tmp_path):
    import torch
    import yaml

    from raysparse.zoo import build_model
    from tests.zoo.test_formats import write_cifar10  # the real on-disk format, small

    write_cifar10(tmp_path)
    raw = yaml.safe_load(open(f"search_spaces/{name}.yaml"))
    raw["base"]["data"]["root"] = str(tmp_path)
    if "init_from" in raw["base"]:  # HAP prunes a trained network
        torch.save(build_model(raw["base"]["model"], (3, 32, 32), 10).state_dict(), tmp_path / "dense.pt")
        raw["base"]["init_from"] = str(tmp_path / "dense.pt")
    loaded = load_sweep(raw)
    assert loaded.base["epochs"] >= 100
    with pytest.raises(ConfigError, match=r"base\.(data\.root: got 'data/cifar10'|init_from: got 'runs/)"):
        load_sweep(f"search_spaces/{name}.yaml")  # without the data: one clear error, before anything


def test_conditional_key_refers_to_an_earlier_key():
    bad = sweep()
    bad["space"]["sparsity.regrowth_ratio"]["when"] = {"sparsity.methd": ["granet"]}
    with pytest.raises(ConfigError, match=r"space\.sparsity\.regrowth_ratio\.when: 'sparsity\.methd' is neither"):
        load_sweep(bad)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"objectives": {"val_acc": "max"}}, r"objectives\.val_acc: unknown metric.*did you mean 'val_accuracy'"),
        ({"objectives": {"test_accuracy": "max"}}, r"objectives\.test_accuracy: test data is never used"),
        ({"objectives": {"val_accuracy": "maximize"}}, r"objectives\.val_accuracy: got mode 'maximize'"),
        ({"space": {"sparsity.final_sparsity": {"uniform": [0.8, 1.2]}}},
         r"space\.sparsity\.final_sparsity: value 1\.2 gives an invalid config: sparsity\.final_sparsity: got 1\.2"),
        ({"space": {"optimizer.lr": {"loguniform": [0, 0.1]}}}, r"space\.optimizer\.lr\.loguniform: got \[0, 0\.1\]"),
        ({"space": {"optimizer.lr": {"uniform": [0.2, 0.1]}}}, r"low < high"),
        ({"space": {"optimizer.lr": {"normal": [0, 1]}}}, r"space\.optimizer\.lr: got keys \['normal'\]"),
        ({"space": {"sparsity.methods": {"choice": ["gmp"]}}}, r"space\.sparsity\.methods: .*unknown key 'methods'"),
        ({"space": {"sparsity.method": {"choice": []}}}, r"space\.sparsity\.method\.choice: got \[\]"),
        ({"num_samples": 0}, r"num_samples: got 0; allowed: an integer >= 1"),
        ({"resources": {"workers": 2, "cpus_per_worker": 64}}, r"resources: a trial needs 2 x 64 CPUs"),
        ({"resources": {"gpus_per_worker": 1}}, r"resources\.gpus_per_worker: got 1 per worker; this machine has 0"),
        ({"resources": {"worker": 2}}, r"resources\.worker: unknown key.*did you mean 'workers'"),
        ({"layer_sparsity": {}}, r"layer_sparsity"),
        ({"layer_sparsity": {"bounds": [0.5, 1.0]}}, r"layer_sparsity\.bounds: \[0\.5, 1\.0\] cannot reach"),
        ({"early_stopping": {"grace": 3}}, r"early_stopping\.grace: unknown key"),
        ({"name": "a b"}, r"name: got 'a b'"),
        ({"sapce": {}}, r"sapce: unknown sweep key.*did you mean 'space'"),
        ({"sampler": "gird"}, r"sampler: got 'gird'; allowed: auto, tpe, nsga2, random, grid.*did you mean 'grid'"),
        ({"sampler": "grid"}, r"space\.sparsity\.regrowth_ratio: got a uniform domain; sampler: grid takes"),
    ],
)
def test_bad_sweeps_name_the_field(changes, expected):
    from raysparse.search.settings import check_local_resources

    with pytest.raises(ConfigError, match=expected):
        loaded = load_sweep(sweep(**changes))
        check_local_resources(loaded.resources)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="sweep: file not found"):
        load_sweep(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="sweep: invalid YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_early_stopping_is_opt_in_with_several_objectives():
    assert load_sweep(sweep()).early_stopping.enabled
    pareto = sweep(objectives={"val_accuracy": "max", "flops_sparse": "min"})
    assert not load_sweep(pareto).early_stopping.enabled  # ASHA on accuracy alone would thin out the front
    assert load_sweep({**pareto, "early_stopping": {"reduction_factor": 3}}).early_stopping.enabled


def test_grace_period_defaults_to_after_pruning_ends():
    assert load_sweep(sweep()).grace_period() == 3  # prune_end 2 -> judged from epoch 3
    wide = sweep(space={"sparsity.prune_end": {"uniform": [1, 3]}})
    wide["base"]["epochs"] = 10
    assert load_sweep(wide).grace_period() == 4
    assert load_sweep(sweep(early_stopping={"grace_period": 2})).grace_period() == 2


def test_trial_config_puts_sampled_values_in_place():
    loaded = load_sweep(sweep())
    config = loaded.trial_config({"sparsity.method": "rigl", "optimizer.lr": 0.05})
    assert config["sparsity"]["method"] == "rigl" and config["optimizer"]["lr"] == 0.05
    assert config["sparsity"]["regrowth_ratio"] == 0.3  # not sampled: the base value stays
    assert loaded.base["optimizer"]["lr"] == 0.1  # the base itself is untouched


def test_list_choices_round_trip_through_optuna_indices():
    loaded = load_sweep(sweep(space={"model.hidden": {"choice": [[64, 32], [32]]}}))
    assert loaded.trial_config({"model.hidden": "1"})["model"]["hidden"] == [32]


def test_layer_densities_are_rescaled_to_the_exact_target():
    from raysparse.config import load_config
    from raysparse.methods import METHODS
    from raysparse.sparsity.distributions import explicit
    from raysparse.sparsity.masks import prunable_weights
    from raysparse.zoo import build_model

    loaded = load_sweep(sweep(space={"sparsity.final_sparsity": {"uniform": [0.7, 0.9]}},
                              layer_sparsity={"bounds": [0.02, 1.0]}))
    layers = loaded.layer_sparsity.layers
    assert list(layers) == ["1", "3", "5"]
    params = {"sparsity.final_sparsity": 0.85, "layer.1": 0.9, "layer.3": 0.1, "layer.5": 0.5}
    config = loaded.trial_config(params)
    densities = config["sparsity"]["layer_densities"]
    assert config["sparsity"]["distribution"] == "explicit"
    kept = sum(densities[n] * layers[n] for n in layers)
    assert abs(kept - 0.15 * sum(layers.values())) < 1.0
    assert densities["1"] > densities["5"] > densities["3"] >= 0.02  # the proposal's order survives
    cfg = load_config(config)
    assert METHODS[cfg.sparsity.method] and cfg.sparsity.layer_densities == densities
    weights = prunable_weights(build_model(cfg.model, (1, 8, 8), 10))
    assert explicit(weights, 0.15, densities=densities) == densities


def test_robustness_objectives_need_the_suite_and_cannot_drive_asha():
    with pytest.raises(ConfigError, match=r"objectives\.mean_corrupted_accuracy: is measured by the robustness"):
        load_sweep(sweep(objectives={"val_accuracy": "max", "mean_corrupted_accuracy": "max"}))
    with_suite = sweep(objectives={"mean_corrupted_accuracy": "max"})
    with_suite["base"]["robustness"] = {"corruptions": ["contrast"]}
    with pytest.raises(ConfigError, match=r"objectives\.mean_corrupted_accuracy: is measured on the test split.*"
                                          r"set base\.robustness\.split: val"):
        load_sweep({**with_suite, "early_stopping": False})
    with_suite["base"]["robustness"]["split"] = "val"
    with pytest.raises(ConfigError, match=r"early_stopping: the first objective 'mean_corrupted_accuracy'"):
        load_sweep(with_suite)
    assert load_sweep({**with_suite, "early_stopping": False}).metric == "mean_corrupted_accuracy"


def test_objectives_compared_with_a_reference_need_one():
    raw = sweep(objectives={"val_accuracy": "max", "mean_excess_error": "min"})
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "split": "val"}
    with pytest.raises(ConfigError, match=r"objectives\.mean_excess_error: compares with a dense reference network: "
                                          r"set base\.robustness\.reference"):
        load_sweep(raw)


def test_paths_become_absolute_because_trials_run_in_their_own_directories(tmp_path, monkeypatch):
    import torch

    from raysparse.zoo import build_model

    monkeypatch.chdir(tmp_path)
    for name in ("ref.pt", "a.pt", "b.pt"):
        torch.save(build_model(small_config()["model"], (1, 8, 8), 10).state_dict(), name)
    raw = sweep()
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "reference": "ref.pt"}
    raw["space"]["init_from"] = {"choice": ["a.pt", "b.pt"]}
    loaded = load_sweep(raw)
    assert loaded.base["robustness"]["reference"] == str(tmp_path / "ref.pt")
    assert loaded.space["init_from"].values == (str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert raw["base"]["robustness"]["reference"] == "ref.pt"  # the caller's dict is left as it was


def test_grid_enumerates_each_combination_once_and_skips_inactive_keys():
    from raysparse.search.spaces import grid_points

    grid = sweep(sampler="grid", space={
        "sparsity.method": {"choice": ["dense", "gmp", "granet"]},
        "sparsity.final_sparsity": {"choice": [0.5, 0.9], "when": {"sparsity.method": ["gmp", "granet"]}},
        "model.hidden": {"choice": [[16], [32, 16]]},
    })
    del grid["num_samples"]
    loaded = load_sweep(grid)
    points = grid_points(loaded.space, loaded.base)
    assert loaded.num_samples == len(points) == (1 + 2 * 2) * 2  # dense is not repeated per sparsity
    configs = [loaded.trial_config(p) for p in points]
    assert len({repr(sorted(p.items())) for p in points}) == len(points)
    assert [c["model"]["hidden"] for c in configs[:2]] == [[16], [32, 16]]
    assert {(c["sparsity"]["method"], c["sparsity"]["final_sparsity"]) for c in configs} == {
        ("dense", grid["base"]["sparsity"]["final_sparsity"]), ("gmp", 0.5), ("gmp", 0.9), ("granet", 0.5),
        ("granet", 0.9),
    }
    with pytest.raises(ConfigError, match=r"num_samples: got 11; the grid has 10 points, so at most 10"):
        load_sweep({**grid, "num_samples": 11})


def test_a_choice_over_patterns_is_searchable_where_its_when_keeps_it_to_the_methods_that_take_it():
    space = {
        "sparsity.method": {"choice": ["gmp", "rigl", "dst"]},
        "sparsity.pattern": {"choice": ["unstructured", "2:4", "block:1x4"],
                             "when": {"sparsity.method": ["gmp", "rigl"]}},
        "sparsity.final_sparsity": {"uniform": [0.5, 0.9]},
    }
    assert load_sweep(sweep(space=space)).space["sparsity.pattern"].values == ("unstructured", "2:4", "block:1x4")
    # gmp (a value the `when` allows, not the base's granet) with 2:4 at final_sparsity 0.3: no such mask
    space["sparsity.final_sparsity"] = {"uniform": [0.3, 0.9]}
    with pytest.raises(ConfigError, match=r"^space\.sparsity\.pattern: value '2:4' with sparsity\.method='gmp', "
                                          r"sparsity\.final_sparsity=0\.3 gives an invalid config: "
                                          r"sparsity\.final_sparsity: got 0\.3; allowed: >= 0\.5"):
        load_sweep(sweep(space=space))


def test_a_trial_logs_its_pattern_among_its_params():
    from raysparse.search.trial import resolved_config

    loaded = load_sweep(sweep(space={"sparsity.pattern": {"choice": ["2:4", "block:1x4"]}},
                              base=small_config("rigl", final_sparsity=0.5)))
    params = resolved_config(loaded.trial_config({"sparsity.pattern": "block:1x4"}))
    assert params["sparsity"]["pattern"] == "block:1x4"
    assert resolved_config(small_config("rigl"))["sparsity"]["pattern"] == "unstructured"  # the default, logged too


def test_ddp_workers_filling_every_cpu_leave_none_for_the_trial_and_are_refused():
    import os

    from raysparse.search.settings import Resources, check_local_resources, trial_cpus

    cpus = os.cpu_count()
    filling = Resources(workers=2, cpus_per_worker=cpus / 2)
    assert trial_cpus(filling) > cpus  # the trial's own process needs a sliver beside its workers
    with pytest.raises(ConfigError, match=rf"needs 2 x {cpus / 2:g} CPUs \+ 0\.01 .* = {cpus + 0.01:g}; this "
                       rf"machine has {cpus} \(lower cpus_per_worker, e\.g\. ") as caught:
        check_local_resources(filling)
    suggested = float(caught.value.message.split("e.g. ")[1].split(",")[0])
    check_local_resources(Resources(workers=2, cpus_per_worker=suggested))  # the suggestion fits
