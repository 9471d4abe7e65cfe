"""Models and data of the user's own, from an import path or as Python objects, through the one loop."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import raysparse
from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs
from raysparse.zoo.user_code import CALLS_CODE, build_network, build_splits, code_by_import_path, with_python_objects
from tests.test_imports import cli_env, write_user_package

USER_PACKAGE = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

CALLS = []


def make_net(input_shape, width=16, depth=1):
    """Names input_shape but not num_classes: it gets only what it names."""
    CALLS.append({"input_shape": input_shape, "width": width})
    layers = [nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.ReLU()]
    layers += [nn.Linear(width, width), nn.ReLU()] * (depth - 1)
    return nn.Sequential(*layers, nn.Linear(width, 4))


def make_data(n=200, features=6):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return {"train": TensorDataset(x, y), "test": TensorDataset(x[:50], y[:50])}
'''


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    """A package of the user's, outside raysparse, importable as a sweep file's directory is."""
    root = tmp_path_factory.mktemp("user_code")
    (root / "shapes_pkg").mkdir()
    (root / "shapes_pkg" / "__init__.py").write_text("")
    (root / "shapes_pkg" / "nets.py").write_text(textwrap.dedent(USER_PACKAGE))
    add_import_dirs([root])
    import shapes_pkg.nets

    return shapes_pkg.nets


def config(**changes):
    base = {"epochs": 2, "seed": 3, "optimizer": {"lr": 0.05},
            "sparsity": {"method": "gmp", "final_sparsity": 0.5, "prune_end": 1, "update_frequency": 2}}
    return {**base, **changes}


def test_factories_by_import_path_train_with_their_options(user_package):
    user_package.CALLS.clear()
    cfg = config(model={"factory": "shapes_pkg.nets:make_net", "width": 12},
                 data={"factory": "shapes_pkg.nets:make_data", "features": 5, "batch_size": 16, "val_fraction": 0.2})
    final = raysparse.train(cfg)
    assert user_package.CALLS == [{"input_shape": (5,), "width": 12}]  # no num_classes: its signature does not name it
    assert final["density"] == pytest.approx(0.5, abs=0.01) and final["val_accuracy"] > 0.25  # 4 classes


def test_validation_is_carved_from_train_seeded_and_disjoint(user_package):
    spec = {"factory": "shapes_pkg.nets:make_data", "val_fraction": 0.25}
    first, again, other = build_splits(spec, seed=1), build_splits(spec, seed=1), build_splits(spec, seed=2)
    assert (len(first.train), len(first.val), len(first.test)) == (150, 50, 50)
    assert set(first.train.indices).isdisjoint(first.val.indices)
    assert first.val.indices == again.val.indices != other.val.indices
    # inferred: labels 0..3, one example's shape
    assert first.info["num_classes"] == 4 and first.info["input_shape"] == (6,)


class Listed(Dataset):
    """A Dataset with no label tensor: labels are read example by example."""

    def __init__(self, n, label):
        self.n, self.label = n, label

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(3), self.label


def test_given_validation_split_and_num_classes_are_used_as_they_are():
    val = Listed(7, 1)
    splits = build_splits({}, seed=0, given=lambda: {"train": Listed(20, 2), "val": val, "test": Listed(5, 0),
                                                     "num_classes": 9})
    assert splits.val is val and len(splits.train) == 20 and splits.info["num_classes"] == 9
    inferred = build_splits({}, seed=0, given=lambda: {"train": Listed(20, 2), "test": Listed(5, 6)})
    assert inferred.info["num_classes"] == 7  # the largest label over every split, plus one


class Classifier(nn.Module):
    """A network of the user's, defined in this test module: built by class with options."""

    def __init__(self, input_shape, num_classes, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.body(x)


def digits():
    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(bunch.target)
    return {"train": TensorDataset(x[:1500], y[:1500]), "test": TensorDataset(x[1500:], y[1500:])}


def test_a_class_and_a_closure_build_the_same_network_afresh_per_run():
    hidden = 24
    built = []

    def closure(input_shape, num_classes):
        built.append(Classifier(input_shape, num_classes, hidden=hidden))
        return built[-1]

    by_class = raysparse.train(config(model={"hidden": 24}), model=Classifier, data=digits)
    by_closure = raysparse.train(config(), model=closure, data=digits)
    again = raysparse.train(config(), model=closure, data=digits)
    assert by_class["val_accuracy"] == by_closure["val_accuracy"] == again["val_accuracy"]  # seeded, same network
    assert len(built) == 2 and built[0] is not built[1]
    assert by_class["density"] == pytest.approx(0.5, abs=0.01)


def test_python_objects_are_recorded_by_name_and_exclude_a_zoo_name():
    marked = with_python_objects({"model": {"hidden": 8}}, model=Classifier, data=digits)
    assert marked["model"] == {"hidden": 8, "python": "tests.zoo.test_user_code:Classifier"}
    assert marked["data"] == {"python": "tests.zoo.test_user_code:digits"}
    with pytest.raises(ConfigError, match=r"^model\.name: is 'mlp', but model= gives one of your own"):
        raysparse.train(config(model={"name": "mlp"}), model=Classifier)
    with pytest.raises(ConfigError, match=r"^model\.python: names the Python object 'x:Net', which is not given"):
        raysparse.train(config(model={"python": "x:Net"}))


def test_an_instance_is_trained_as_it_is():
    torch.manual_seed(0)
    network = Classifier((1, 8, 8), 10)
    before = network.body[1].weight.detach().clone()
    raysparse.train(config(), model=network)
    assert not torch.equal(network.body[1].weight, before)  # this very module was trained
    assert build_network({"name": "mlp"}, (1, 8, 8), 10, given=network) is network


def test_broken_user_code_is_one_line_naming_the_field():
    with pytest.raises(ConfigError, match=r"^model: tests\.zoo\.test_user_code:Classifier raised TypeError: "):
        raysparse.train(config(model={"hidden": "wide"}), model=Classifier)
    with pytest.raises(ConfigError, match=r"^model\.hiden: unknown option 'hiden' for model tests\.zoo"):
        raysparse.train(config(model={"hiden": 3}), model=Classifier)
    with pytest.raises(ConfigError, match=r"^data: got int; allowed: a zero-argument callable"):
        raysparse.train(config(), data=3)
    with pytest.raises(ConfigError, match=r"^model: a batch of shape \[2, 1, 8, 8\] gives outputs \[2, 5\]; "
                                          r"expected \[2, 10\]"):
        raysparse.train(config(), model=lambda input_shape: Classifier(input_shape, 5))


def test_the_cli_names_the_code_a_config_calls_once_before_calling_any(tmp_path):
    write_user_package(tmp_path)
    cfg = config(epochs=1, measure_latency=False, model={"factory": "userpkg.models:mlp"},
                 data={"factory": "userpkg.data:blobs", "batch_size": 32},
                 task="raysparse.tasks.classification:Classification")
    cfg["sparsity"]["method"] = "raysparse.methods.gmp:GMP"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    cli = Path(sys.executable).parent / "raysparse"
    done = subprocess.run([str(cli), "train", str(tmp_path / "train.yaml")], cwd=tmp_path,
                          env=cli_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    named = [i for i, line in enumerate(lines) if line.startswith(CALLS_CODE)]
    assert len(named) == 1, done.stderr
    assert lines[named[0]] == (
        f"{CALLS_CODE}model.factory userpkg.models:mlp, data.factory userpkg.data:blobs, "
        "task raysparse.tasks.classification:Classification, sparsity.method raysparse.methods.gmp:GMP")
    assert named[0] < lines.index("userpkg.models:mlp called")  # said before the factory ran


def test_a_config_of_zoo_names_only_calls_no_code_and_says_nothing(tmp_path):
    assert code_by_import_path(load_config(config(model={"name": "mlp"}, data={"name": "digits"}))) == []
    raw = config(model={"factory": "userpkg.models:mlp"}, data={"name": "digits"}, task={"name": "lab.tasks:Mine"},
                 robustness={"datasets": {"shifted": {"factory": "lab.data:shifted"}}})
    assert code_by_import_path(raw) == [("model.factory", "userpkg.models:mlp"), ("task.name", "lab.tasks:Mine"),
                                        ("robustness.datasets.shifted.factory", "lab.data:shifted")]
