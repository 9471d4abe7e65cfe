"""Sweeps over the user's own code on real components (local Ray, Optuna, an MLflow server): a
package outside raysparse named by import path from a YAML sweep run through the CLI; a network
given from Python as a class of this module and as a closure; a training loop of the user's."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import raysparse
from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.search.result import typed_param
from raysparse.tracking import download_lineage, download_masks, ensure_local_server, load_sweep, run_params

MODELS_PY = '''
from torch import nn


def mlp(input_shape, num_classes, width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
'''

DATA_PY = '''
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def digits():
    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(bunch.target)
    return {"train": TensorDataset(x[:1500], y[:1500]), "test": TensorDataset(x[1500:], y[1500:])}
'''


def tiny_base(epochs=2):
    return {"epochs": epochs, "measure_latency": False, "optimizer": {"lr": 0.05},
            "sparsity": {"method": "gmp", "final_sparsity": 0.75, "prune_end": 1, "update_frequency": 5}}


def assert_masks_are_in_the_weights(network, masks):
    for name, mask in masks.items():
        weight = network.get_submodule(name).weight
        assert torch.all(weight[~mask] == 0) and weight[mask].ne(0).any(), name


def test_yaml_sweep_over_a_user_package_through_the_cli(home, tmp_path):
    project = tmp_path / "project"
    (project / "userpkg").mkdir(parents=True)
    (project / "userpkg" / "__init__.py").write_text("")
    (project / "userpkg" / "models.py").write_text(textwrap.dedent(MODELS_PY))
    (project / "userpkg" / "data.py").write_text(textwrap.dedent(DATA_PY))
    base = {**tiny_base(), "model": {"factory": "userpkg.models:mlp", "width": 16},
            "data": {"factory": "userpkg.data:digits", "batch_size": 64, "val_fraction": 0.1}}
    sweep = {"name": "userpkg", "base": base, "space": {"model.width": {"int": [8, 32]}}, "sampler": "random",
             "num_samples": 2, "early_stopping": False}
    (project / "userpkg.yaml").write_text(yaml.safe_dump(sweep))
    elsewhere = tmp_path / "elsewhere"  # the sweep file's directory, not the working directory, holds the package
    elsewhere.mkdir()
    # absolute: the CLI runs elsewhere, and must still import this raysparse
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    pythonpath = os.pathsep.join(str(Path(p).resolve()) for p in entries if p)
    env = {**os.environ, "RAYSPARSE_HOME": str(home), "RAY_ADDRESS": "local", "PYTHONPATH": pythonpath}
    cli = Path(sys.executable).parent / "raysparse"
    done = subprocess.run([str(cli), "sweep", str(project / "userpkg.yaml")], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial" in done.stdout

    uri = ensure_local_server(home)
    trials = load_sweep(uri, "userpkg").trials
    assert len(trials) == 2 and set(trials["status"]) == {"FINISHED"}
    assert set(trials["params.model.factory"]) == {"userpkg.models:mlp"}
    run_id = trials["run_id"].iloc[0]
    params = run_params(uri, run_id)
    assert params["lr_schedule.name"] == "cosine" and params["seed"] == "0"  # defaults recorded, not only what was set
    network = raysparse.load_model(trials.iloc[0], tracking_uri=uri)  # a to_dataframe() row; the package imports here
    assert network[1].out_features == int(params["model.width"])
    masks = download_masks(uri, run_id)
    assert_masks_are_in_the_weights(network, masks)
    assert sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) == pytest.approx(
        0.25, abs=0.01)
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", tracking_uri=uri)
    logged = json.loads(Path(folder, "config.json").read_text())
    assert logged == json.loads(json.dumps(load_config(logged).to_dict()))  # resolved: loading it adds nothing
    assert logged["lr_schedule"]["name"] == "cosine" and logged["model"]["width"] == int(params["model.width"])
    program = torch.export.load(f"{folder}/model.pt2").module()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(program(x), network.eval()(x), atol=1e-5)


class TinyNet(nn.Module):
    """The user's network, defined in this test module: pickled by reference to the trials."""

    def __init__(self, input_shape, num_classes, hidden=16):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def digits_splits(limit):
    """A closure over ``limit``: pickled by value to the trials."""

    def make():
        bunch = load_digits()
        x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)[:limit]
        y = torch.from_numpy(bunch.target)[:limit]
        return {"train": TensorDataset(x[:-300], y[:-300]), "test": TensorDataset(x[-300:], y[-300:])}

    return make


def test_a_class_and_a_closure_from_python_train_the_same_network(ray_runtime, home):
    sweep = {"name": "pyobjects", "base": {**tiny_base(), "model": {"hidden": 16}}, "sampler": "grid",
             "space": {"model.hidden": {"choice": [16, 24]}}, "early_stopping": False}
    by_class = raysparse.sweep(sweep, model=TinyNet, data=digits_splits(1200), home=home, verbose=False)
    hidden = 16

    def closure(input_shape, num_classes):
        return TinyNet(input_shape, num_classes, hidden=hidden)

    by_closure = raysparse.sweep({**sweep, "name": "pyclosure", "base": tiny_base(), "space": {}, "num_samples": 1,
                                  "sampler": "random"}, model=closure, data=digits_splits(1200), home=home,
                                 verbose=False)
    trials = by_class.to_dataframe().set_index("params.model.hidden")
    assert set(trials["status"]) == {"FINISHED"} and set(trials.index) == {16, 24}
    assert set(trials["params.model.python"]) == {"tests.search.test_user_code:TinyNet"}
    (closure_trial,) = [row for _, row in by_closure.to_dataframe().iterrows()]
    # each trial built its network afresh from the same seed: the same training, whichever way it came
    assert closure_trial["metrics.val_accuracy"] == trials.loc[16, "metrics.val_accuracy"]

    best = by_class.best()
    assert isinstance(best["params"]["model.hidden"], int) and best["params"]["measure_latency"] is False
    assert best["params"]["optimizer.betas"] == [0.9, 0.999] and best["params"]["sparsity.dense_layers"] == []
    assert best["params"]["init_from"] is None and best["params"]["sparsity.method"] == "gmp"
    network = by_class.load_model()  # the best trial's, built again from the class
    assert isinstance(network, TinyNet) and network.head.in_features == best["params"]["model.hidden"]
    assert_masks_are_in_the_weights(network, download_masks(by_class.tracking_uri, best["run_id"]))

    with pytest.warns(UserWarning, match=r"'tests\.search\.test_user_code:.*<locals>\.closure' cannot be imported"):
        program = raysparse.load_model(by_closure.best()["run_id"], tracking_uri=by_closure.tracking_uri)
    rebuilt = by_closure.load_model()  # the sweep's own closure builds it
    x = torch.randn(3, 1, 8, 8)
    assert isinstance(rebuilt, TinyNet) and torch.allclose(program(x), rebuilt.eval()(x), atol=1e-5)

    with pytest.raises(ConfigError, match=r"^model: sweep 'pyobjects' was started with a Python model "
                                          r"\(tests\.search\.test_user_code:TinyNet\).*resume_sweep\('pyobjects', "
                                          r"model=\.\.\.\)"):
        raysparse.resume_sweep("pyobjects", home=home)
    with pytest.raises(ConfigError, match=r"^model: got an instance of TinyNet: one network every trial would share"):
        raysparse.sweep(sweep, model=TinyNet((1, 8, 8), 10), home=home)


def digits_loaders(seed):
    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(bunch.target)
    train = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, (x[1400:], y[1400:])


def mlp(hidden=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def sparse_loop(trial):
    """The user's own loop. The rigl trial's first attempt crashes after its second report, so
    Tune retries it from that report's checkpoint."""
    config = trial.config
    torch.manual_seed(config["seed"])
    model = mlp(config["model"]["hidden"])
    optimizer = torch.optim.SGD(model.parameters(), lr=config["optimizer"]["lr"], momentum=0.9)
    train, (x_val, y_val) = digits_loaders(config["seed"])
    sparsifier = trial.sparsifier(model, optimizer, steps_per_epoch=len(train))
    state, start = trial.restore(), 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
    for epoch in range(start, config["epochs"]):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y) + sparsifier.penalty()
            loss.backward()
            optimizer.step()
            sparsifier.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
        trial.report({"val_accuracy": accuracy, "train_loss": float(loss)},
                     checkpoint={"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1})
        if config["sparsity"]["method"] == "rigl" and state is None and epoch == 1:
            raise RuntimeError("the trial's process died (simulated)")


def test_a_sweep_over_a_loop_of_your_own(ray_runtime, home):
    base = {**tiny_base(epochs=3), "model": {"hidden": 32}}
    base["sparsity"].update(initial_sparsity=0.0, prune_end=2)
    sweep = {"name": "ownloop", "base": base, "sampler": "grid", "max_failures": 1, "early_stopping": False,
             "space": {"sparsity.method": {"choice": ["gmp", "rigl", "hap"]}}}
    result = raysparse.sweep(sweep, loop=sparse_loop, home=home, verbose=False)
    trials = result.to_dataframe().set_index("params.sparsity.method")
    assert trials.loc["hap", "status"] == "FAILED"  # refused by the Sparsifier, at once and not retried
    assert trials.loc["hap", "failure_reason"].startswith("bad config: sparsity.method: 'hap' rebuilds the model's")
    uri, client = result.tracking_uri, MlflowClient(result.tracking_uri)
    for method in ("gmp", "rigl"):
        run_id = trials.loc[method, "run_id"]
        assert trials.loc[method, "status"] == "FINISHED"
        assert trials.loc[method, "params.loop"] == "tests.search.test_user_code:sparse_loop"
        epochs = [m.step for m in client.get_metric_history(run_id, "val_accuracy")]
        assert sorted(epochs) == [1, 2, 3]  # each report once, the retried one's included
        masks = download_masks(uri, run_id)
        density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        assert density == pytest.approx(trials.loc[method, "metrics.density"], abs=1e-9)
        assert density == pytest.approx(0.25, abs=0.02)
        lineage = download_lineage(uri, run_id)
        assert lineage and all(b["parent_hash"] == a["hash"] for a, b in zip(lineage, lineage[1:]))
        assert lineage[-1]["hash"] == raysparse.masks_hash(masks)
        network = raysparse.load_model(run_id, tracking_uri=uri, model=mlp)
        assert_masks_are_in_the_weights(network, masks)
    reasons = [row["reason"] for row in download_lineage(uri, trials.loc["rigl", "run_id"])]
    assert "checkpoint at report 2" in reasons and reasons.index("resume at report 2") > reasons.index(
        "checkpoint at report 2")
    assert "resume at report 2" not in [row["reason"] for row in download_lineage(uri, trials.loc["gmp", "run_id"])]


def test_params_read_back_as_the_values_they_were():
    from raysparse.tracking import flatten_params

    config = load_config({"model": {"name": "mlp", "hidden": [256, 128]}}).to_dict()
    typed = {k: typed_param(v) for k, v in flatten_params(config).items()}
    assert typed["model.hidden"] == [256, 128] and typed["optimizer.nesterov"] is False
    assert typed["optimizer.betas"] == [0.9, 0.999] and typed["epochs"] == 30 and typed["optimizer.lr"] == 0.1
    assert typed["init_from"] is None and typed["sparsity.method"] == "dense" and typed["device"] == "auto"
    assert typed_param("/data/cifar10") == "/data/cifar10" and typed_param("pkg.nets:make") == "pkg.nets:make"
