"""Sweeps over the user's own code on real components (local Ray, Optuna, an MLflow server): a
package outside raysparse named by import path from a YAML sweep run through the CLI; a network
given from Python as a class of this module and as a closure; a training loop of the user's."""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import raysparse
from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.search.result import typed_param
from raysparse.tracking import download_lineage, download_masks, ensure_local_server, load_sweep, run_params
from raysparse.zoo.user_code import CALLS_CODE
from tests.test_imports import cli_env, imported_after, plant_stray_modules, strays_that_ran

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


RECORDING_MODELS = '''
import os
import sys

from torch import nn


def mlp(input_shape, num_classes, width=16):
    """Says it was called, and records in which process and which netrc that process had imported."""
    print("userpkg.models:mlp called", file=sys.stderr, flush=True)
    netrc = sys.modules.get("netrc")
    with open({log!r}, "a") as f:
        f.write(f"{{os.getpid()}} {{getattr(netrc, '__file__', None)}}\\n")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
'''


def test_a_sweep_beside_stray_stdlib_modules_runs_none_and_names_its_code_once(home, tmp_path):
    """A `netrc.py` (and others) beside the sweep file and in the working directory: none runs
    anywhere, neither in the driver nor in Ray's workers (Ray puts the driver's working directory
    first on their sys.path unless told otherwise) nor in the embedded MLflow server, and the
    trial's netrc (MLflow's requests import it) is the standard library's; the user's package
    there still imports; the code the sweep calls is named once, on the driver, before it is called."""
    project, work, stray_log = tmp_path / "project", tmp_path / "work", tmp_path / "stray_modules_that_ran.txt"
    calls_log = tmp_path / "factory_calls.txt"
    (project / "userpkg").mkdir(parents=True)
    (project / "userpkg" / "__init__.py").write_text("")
    (project / "userpkg" / "models.py").write_text(textwrap.dedent(RECORDING_MODELS).format(log=str(calls_log)))
    (project / "userpkg" / "data.py").write_text(textwrap.dedent(DATA_PY))
    work.mkdir()
    for directory in (project, work):
        plant_stray_modules(directory, stray_log)
    base = {**tiny_base(epochs=1), "model": {"factory": "userpkg.models:mlp"},
            "data": {"factory": "userpkg.data:digits", "batch_size": 64}}
    base["sparsity"]["prune_end"] = 1
    sweep = {"name": "stray", "base": base, "space": {}, "sampler": "random", "num_samples": 1,
             "early_stopping": False}
    (project / "stray.yaml").write_text(yaml.safe_dump(sweep))
    cli = Path(sys.executable).parent / "raysparse"
    # -X importtime in the driver only (a flag, not inherited by Ray's processes as an environment would be)
    driver = subprocess.Popen([sys.executable, "-X", "importtime", str(cli), "sweep", str(project / "stray.yaml")],
                              cwd=work, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = driver.communicate(timeout=900)
    ran = strays_that_ran(stray_log)
    assert [r for r in ran if r[1] == str(project)] == [], "beside the sweep file"  # anywhere: raysparse's doing
    assert [r for r in ran if r[2].split()[0] == str(cli)] == [], "in the driver"
    assert ran == [], "in Ray's workers or the embedded MLflow server (the working directory's)"
    assert driver.returncode == 0, err[-3000:]
    trials = load_sweep(ensure_local_server(home), "stray").trials
    assert list(trials["status"]) == ["FINISHED"]

    calls = [line.split(" ", 1) for line in calls_log.read_text().splitlines()]
    in_trials = [netrc for pid, netrc in calls if int(pid) != driver.pid]
    assert len(calls) > len(in_trials) > 0, calls  # the driver's checks, then the trial's
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    # the trial had imported netrc (its MLflow run is open by then): the standard library's
    assert all(netrc != "None" and Path(netrc).resolve().parent == stdlib for netrc in in_trials), in_trials
    assert "netrc" in imported_after(err, "userpkg.models:mlp called")  # and so did the driver, after

    # the trial's own stderr (Ray's worker logs of this driver's session): the factory ran there, unannounced
    session_logs = Path("/tmp/ray").glob(f"session_*_{driver.pid}/logs/worker-*.err")
    trial_logs = "".join(path.read_text() for path in session_logs)
    assert "userpkg.models:mlp called" in trial_logs and CALLS_CODE not in trial_logs
    named = [line for line in (out + err).splitlines() if CALLS_CODE in line]
    assert named == [f"{CALLS_CODE}model.factory userpkg.models:mlp, data.factory userpkg.data:digits"]
    lines = err.splitlines()
    assert lines.index(named[0]) < lines.index("userpkg.models:mlp called")



def test_ray_workers_find_the_driver_directories_after_the_standard_library(ray_runtime):
    """The working directory stays importable in Ray's workers (a class pickled by reference from
    a module there unpickles, as the class test above does from `tests`), after the standard
    library and site-packages: Ray's default would put it first."""
    @ray_runtime.remote
    def worker_sys_path():
        return sys.path

    path = [os.path.realpath(p) for p in ray_runtime.get(worker_sys_path.remote()) if p]
    installed = max(path.index(os.path.realpath(sysconfig.get_path(kind))) for kind in ("stdlib", "purelib"))
    assert path.index(os.path.realpath(os.getcwd())) > installed, path

class LabelledLate(Dataset):
    """Labels only through __getitem__ (no ``targets``): the last example's 7 is past num_classes=4,
    which no check before start reads; the first batch that holds it finds it."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1, 8, 8), (7 if i == self.n - 1 else i % 4)


def labelled_late(log):
    def make():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return {"train": LabelledLate(64), "test": LabelledLate(16), "num_classes": 4}

    return make


def test_a_label_past_num_classes_found_in_a_trial_fails_it_once_as_bad_data(ray_runtime, home, tmp_path):
    log = tmp_path / "data_factory_calls.txt"
    sweep = {"name": "latelabel", "base": {**tiny_base(epochs=1), "model": {"hidden": 8},
                                           "data": {"batch_size": 16}},
             "space": {}, "sampler": "random", "num_samples": 1, "early_stopping": False, "max_failures": 2}
    result = raysparse.sweep(sweep, model=TinyNet, data=labelled_late(log), home=home, verbose=False)
    (trial,) = [row for _, row in result.to_dataframe().iterrows()]
    assert trial["status"] == "FAILED"
    assert trial["failure_reason"].startswith("bad config: data: a batch holds label 7; allowed: labels in [0, 4)")
    pids = [int(pid) for pid in log.read_text().split()]
    # the driver's check, then one attempt that trained: a retry would fail the same way, so none built data
    assert pids[0] == os.getpid() and len([pid for pid in pids if pid != os.getpid()]) == 1, pids
