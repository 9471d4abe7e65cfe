import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.zoo import DATASETS, build_data, dataset_names

# ------------------------------------------------------------------ splits and options


def test_digits_splits_are_disjoint_and_add_up():
    data = build_data({"name": "digits", "val_fraction": 0.1}, seed=0)
    splits = [data.train, data.val, data.test]
    assert sum(len(s) for s in splits) == 1797
    indices = torch.cat([s.source_index for s in splits])
    assert sorted(indices.tolist()) == list(range(1797))
    assert len(data.test) == round(0.2 * 1797) and len(data.val) == round(0.1 * (1797 - 359))
    assert data.info["input_shape"] == (1, 8, 8) and data.info["num_classes"] == 10


def test_digits_are_standardized_with_train_statistics():
    x, _ = build_data({"name": "digits"}, seed=0).train.tensors()
    assert x.dtype == torch.float32
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_same_seed_same_splits_other_seed_other_train_val_same_test():
    first, again, other = (build_data({"name": "digits"}, seed=s) for s in (1, 1, 2))
    assert torch.equal(first.train.source_index, again.train.source_index)
    assert torch.equal(first.train.tensors()[0], again.train.tensors()[0])
    assert not torch.equal(first.train.source_index, other.train.source_index)
    assert not torch.equal(first.val.source_index, other.val.source_index)
    # The holdout test set is fixed, so test numbers compare across run seeds.
    assert torch.equal(first.test.source_index, other.test.source_index)


def test_limit_caps_train_plus_val_and_zero_val_fraction_gives_empty_val():
    data = build_data({"name": "digits", "limit": 100, "val_fraction": 0.2}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 359)
    data = build_data({"name": "digits", "val_fraction": 0}, seed=0)
    assert len(data.val) == 0 and len(data.train) == 1797 - 359


def test_loader_keys_are_accepted_and_ignored():
    spec = {"name": "digits", "batch_size": 32, "num_workers": 2, "augment": True}
    assert len(build_data(spec, seed=0).train) == len(build_data({"name": "digits"}, 0).train)


def test_synthetic_is_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression

    data = build_data({"name": "synthetic"}, seed=0)
    assert data.info["input_shape"] == (1, 8, 8) and data.info["num_classes"] == 10
    (x_train, y_train), (x_test, y_test) = data.train.tensors(), data.test.tensors()
    model = LogisticRegression(max_iter=500).fit(x_train.flatten(1), y_train)
    assert model.score(x_test.flatten(1), y_test) > 0.6  # chance is 0.1


def test_synthetic_options():
    data = build_data({"name": "synthetic", "num_samples": 300, "num_features": 5,
                       "num_classes": 3}, seed=0)
    assert data.info["input_shape"] == (1, 1, 5) and data.info["num_classes"] == 3
    assert len(data.train) + len(data.val) + len(data.test) == 300
    data = build_data({"name": "synthetic", "shape": [3, 4, 4], "num_samples": 100}, seed=0)
    assert data.train.x.shape[1:] == (3, 4, 4)


@pytest.mark.parametrize(
    ("spec", "field", "bad_value"),
    [
        ({"name": "digitz"}, "data.name", "digitz"),
        ({"name": "digits", "val_fraction": 0.7}, "data.val_fraction", "0.7"),
        ({"name": "digits", "val_fraction": "big"}, "data.val_fraction", "big"),
        ({"name": "digits", "limit": -5}, "data.limit", "-5"),
        ({"name": "digits", "limt": 5}, "data.limt", "limt"),
        ({"name": "synthetic", "shape": [1, 2]}, "data.shape", "[1, 2]"),
        ({"name": "synthetic", "num_classes": 1}, "data.num_classes", "1"),
        ({"name": "imagefolder", "image_size": 0, "root": "."}, "data.image_size", "0"),
    ],
)
def test_bad_specs_name_the_field_and_value(spec, field, bad_value):
    with pytest.raises(ConfigError) as excinfo:
        build_data(spec, seed=0)
    assert excinfo.value.field == field
    assert field in str(excinfo.value) and bad_value in str(excinfo.value)


def test_unknown_key_lists_allowed_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"allowed: .*val_fraction.*did you mean 'limit'"):
        build_data({"name": "digits", "limt": 5}, seed=0)


def test_dataset_names_cover_the_registry():
    assert dataset_names() == DATASETS.names()
    assert {"digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100",
            "imagefolder"} <= set(dataset_names())
