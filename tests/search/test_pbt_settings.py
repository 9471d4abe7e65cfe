"""PBT's settings are validated with the sweep, before Ray or MLflow start (no Ray here)."""

import pytest

from raysparse.errors import ConfigError
from raysparse.search.spaces import load_sweep
from tests.search.test_spaces import sweep

PBT = {"scheduler": "pbt", "interval": 2}


ES = "early_stopping"
BAD = [
    ({ES: {"scheduler": "pbtt"}}, r"early_stopping\.scheduler: got 'pbtt'; allowed: asha, pbt.*did you mean 'pbt'"),
    ({ES: {**PBT, "grace_period": 2}},
     r"early_stopping\.grace_period: is a setting of scheduler: asha; with scheduler: pbt allowed: enabled"),
    ({ES: {"interval": 2}}, r"early_stopping\.interval: is a setting of scheduler: pbt; with scheduler: asha"),
    ({ES: {"scheduler": "asha", "mutate": ["optimizer.lr"]}}, r"early_stopping\.mutate: is a setting of scheduler: p"),
    ({ES: {**PBT, "interval": 0}}, r"early_stopping\.interval: got 0; allowed: an integer >= 1"),
    ({ES: {**PBT, "interval": 4}}, r"early_stopping\.interval: got 4; allowed: an integer from 1 to 3"),
    ({ES: {**PBT, "mutate": "optimizer.lr"}}, r"early_stopping\.mutate: got 'optimizer\.lr'; allowed: a non-empty"),
    ({ES: {**PBT, "mutate": ["optimizer.lrr"]}},
     r"early_stopping\.mutate: got 'optimizer\.lrr', not a key of the space.*did you mean 'optimizer.lr'"),
    ({ES: {**PBT, "quantile_fraction": 0.7}}, r"early_stopping\.quantile_fraction: got 0\.7; allowed: .*\(0, 0\.5\]"),
    ({ES: PBT, "objectives": {"val_accuracy": "max", "density": "min"}},
     r"early_stopping\.scheduler: got 'pbt' with 2 objectives.*PBT ranks trials by one metric"),
    ({ES: PBT, "sampler": "tpe"}, r"sampler: got 'tpe' with early_stopping\.scheduler: pbt.*allowed: auto, random"),
    ({ES: PBT, "resources": {"workers": 2}}, r"early_stopping\.scheduler: got 'pbt' with resources\.workers 2"),
    ({ES: PBT, "layer_sparsity": {"layers": ["*"]}}, r"layer_sparsity: is sampled by Optuna"),
    ({ES: PBT, "space": {"sparsity.method": {"choice": ["gmp", "granet"]}}},
     r"early_stopping\.mutate: not given, and the space has none of its defaults"),
    ({ES: PBT, "objectives": {"latency_ms_b64": "min"}}, r"early_stopping: the first objective 'latency_ms_b64'"),
]


@pytest.mark.parametrize("changes, expected", BAD)
def test_bad_pbt_settings_name_the_key(changes, expected):
    with pytest.raises(ConfigError, match=expected):
        load_sweep(sweep(**changes))


def test_mutate_defaults_to_the_number_keys_of_a_sparse_schedule_the_space_has():
    loaded = load_sweep(sweep(early_stopping=PBT))
    settings = loaded.early_stopping
    assert settings.pbt and settings.mutate == ("sparsity.regrowth_ratio", "optimizer.lr")
    assert settings.interval == 2 and settings.quantile_fraction == 0.25
    chosen = load_sweep(sweep(early_stopping={**PBT, "mutate": ["sparsity.method"], "quantile_fraction": 0.5}))
    assert chosen.early_stopping.mutate == ("sparsity.method",) and chosen.early_stopping.quantile_fraction == 0.5
    assert not load_sweep(sweep(early_stopping={**PBT, "enabled": False})).early_stopping.pbt


def test_a_key_whose_when_fails_is_left_out_of_a_trial_tune_sampled_whole():
    loaded = load_sweep(sweep(early_stopping=PBT))
    config = loaded.trial_config({"sparsity.method": "gmp", "sparsity.regrowth_ratio": 0.55, "optimizer.lr": 0.02})
    assert config["sparsity"]["regrowth_ratio"] == 0.3  # gmp: the base value, not the sampled one
    config = loaded.trial_config({"sparsity.method": "rigl", "sparsity.regrowth_ratio": 0.55, "optimizer.lr": 0.02})
    assert config["sparsity"]["regrowth_ratio"] == 0.55


def test_perturbed_values_stay_inside_the_space():
    from raysparse.search.pbt import ClipToSpace, pbt_param_space

    loaded = load_sweep(sweep(early_stopping=PBT, space={
        "sparsity.regrowth_ratio": {"uniform": [0.1, 0.6]}, "sparsity.update_frequency": {"int": [2, 9]},
        "optimizer.lr": {"loguniform": [0.01, 0.2]}}))
    clip = ClipToSpace(loaded.space)
    config = clip({"sparsity.regrowth_ratio": 0.72, "sparsity.update_frequency": 10.8, "optimizer.lr": 0.004})
    assert config == {"sparsity.regrowth_ratio": 0.6, "sparsity.update_frequency": 9, "optimizer.lr": 0.01}
    assert isinstance(config["sparsity.update_frequency"], int)
    space = pbt_param_space(loaded)
    assert set(space) == set(loaded.space)
    assert all(2 <= space["sparsity.update_frequency"].sample() <= 9 for _ in range(50))
