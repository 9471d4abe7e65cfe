"""Bad input: one clear error naming the field, the bad value and what is allowed."""

import pytest

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.train import fit
from tests.conftest import small_config


def with_(path: str, value):
    cfg = small_config()
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("sparsity.method", "grant", r"sparsity\.method: unknown method 'grant'; available: .*did you mean 'granet'"),
        ("model.name", "resnet21", r"model\.name: unknown model 'resnet21'; available: .*resnet20"),
        ("data.name", "digitz", r"data\.name: unknown dataset 'digitz'.*did you mean 'digits'"),
        ("sparsity.distribution", "erkk", r"sparsity\.distribution: unknown distribution 'erkk'"),
        ("sparsity.final_sparsity", 1.0, r"sparsity\.final_sparsity: got 1\.0; allowed: \[0, 1\)"),
        ("sparsity.final_sparsity", -0.1, r"sparsity\.final_sparsity: got -0\.1"),
        ("sparsity.prune_start", 3, r"sparsity\.prune_end: got 2\.0; allowed: an epoch in \[prune_start=3\.0"),
        ("sparsity.update_frequency", "often", r"sparsity\.update_frequency: expected an integer, got 'often'"),
        ("sparsity.regrowth_decay", "cosin", r"did you mean 'cosine'"),
        ("epochs", -1, r"epochs: got -1; allowed: an integer >= 0 \(0: prune a trained network and evaluate it"),
        ("optimizer.name", "sgdd", r"optimizer\.name: unknown optimizer 'sgdd'"),
        ("optimizer.lr", -1, r"optimizer\.lr: got -1\.0; allowed: a number > 0"),
        ("lr_schedule.name", "cosine_warm", r"lr_schedule\.name: unknown lr schedule"),
        ("sparsity.prune_ratio", 0.5, r"sparsity\.prune_ratio: unknown key 'prune_ratio'; allowed: .*"),
        ("optimiser", {"name": "sgd"}, r"optimiser: unknown key 'optimiser'.*did you mean 'optimizer'"),
    ],
)
def test_bad_values_name_the_field(path, value, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(with_(path, value))


def test_dense_layer_that_matches_nothing_fails_before_training():
    reports = []
    with pytest.raises(ConfigError, match=r"sparsity\.dense_layers: 'classifier' matches no prunable layer"):
        fit(with_("sparsity.dense_layers", ["classifier"]), lambda m, c: reports.append(m))
    assert reports == []


def test_missing_dataset_root_names_data_root(tmp_path):
    cfg = with_("data", {"name": "mnist", "root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"data\.root"):
        fit(cfg)


def test_a_valid_config_round_trips():
    config = load_config(small_config())
    assert load_config(config.to_dict()) == config
