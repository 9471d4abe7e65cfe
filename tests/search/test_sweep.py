"""Sweeps end to end on real components: a local Ray runtime (2 CPUs), a real Optuna sampler, a
real MLflow server on 127.0.0.1."""

import pytest
from torch import nn

import raysparse
from raysparse.errors import ConfigError
from raysparse.tracking import download_lineage, download_masks
from raysparse.tracking.naming import FINAL_UPLOAD_TAG, PROCESS_TAG
from tests.search.conftest import logged_steps, tiny_sweep


def test_four_trials_four_child_runs_with_metrics_and_masks(four_trials):
    result = four_trials
    trials = result.to_dataframe()
    assert len(trials) == 4 and set(trials["status"]) == {"FINISHED"}
    assert trials["trial_id"].nunique() == 4
    assert (trials["metrics.epoch"] == 3).all() and trials["metrics.val_accuracy"].gt(0.3).all()
    for _, row in trials.iterrows():
        masks = download_masks(result.tracking_uri, row["run_id"])
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert kept / total == pytest.approx(row["metrics.density"], abs=1e-9)
        assert kept / total == pytest.approx(1 - row["params.sparsity.final_sparsity"], abs=0.01)
        lineage = download_lineage(result.tracking_uri, row["run_id"])
        assert lineage and all(b["parent_hash"] == a["hash"] for a, b in zip(lineage, lineage[1:]))
    best = result.best()
    assert best["metrics"]["val_accuracy"] == trials["metrics.val_accuracy"].max()
    assert_model_loads_without_raysparse(result.tracking_uri, best["run_id"])
    assert best["config"]["sparsity"]["method"] in ("gmp", "granet")
    assert result.experiment_name == "four" and result.parent_run_id


def test_every_trial_is_whole_in_mlflow_when_the_sweep_returns(four_trials):
    """Trials report to Tune at most every second, and upload their final artifacts after they
    return (while the next trial trains): MLflow still holds every epoch, and every artifact,
    as soon as the sweep returns."""
    from mlflow import MlflowClient

    client = MlflowClient(four_trials.tracking_uri)
    for run_id in four_trials.to_dataframe()["run_id"]:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags[FINAL_UPLOAD_TAG] == run.data.tags[PROCESS_TAG]
        assert logged_steps(four_trials.tracking_uri, run_id) == {key: [1, 2, 3] for key in
                                                                   ("epoch", "train_loss", "val_accuracy", "density")}
        files = {f.path for folder in ("masks", "model", "plots", "") for f in client.list_artifacts(run_id, folder)}
        assert {"masks/final.bin", "masks/lineage.jsonl", "layer_density.csv", "model/state_dict.pt",
                "model/model.pt2", "model/config.json", "model/build.json", "plots/training.png",
                "plots/layer_density.png"} <= files


class UnsavableExtraState(nn.Module):
    """Trains as any network, but its extra state (a lambda) cannot be pickled: torch.save of
    the final state_dict fails, in the upload that runs after the trial returned."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.layers(x)

    def get_extra_state(self):
        return {"made_by": lambda: None}

    def set_extra_state(self, state):
        pass


def test_a_final_upload_that_fails_after_the_trial_returned_ends_its_run_failed(ray_runtime, home):
    sweep = tiny_sweep("upload-fails", num_samples=1, max_concurrent=1, space={})
    sweep["base"].update(epochs=1, measure_latency=False, model={})
    sweep["base"]["sparsity"].update(method="gmp", prune_end=1)
    result = raysparse.sweep(sweep, model=UnsavableExtraState, home=home, verbose=False)
    trials = result.to_dataframe()
    assert trials["status"].tolist() == ["FAILED"]
    reason = trials["failure_reason"].iloc[0]
    assert "final artifacts were not all uploaded" in reason and "lambda" in reason


def test_robustness_metrics_plots_and_report_land_in_the_runs(four_trials, tmp_path):
    from mlflow import MlflowClient

    trials = four_trials.to_dataframe()
    corrupted = [f"metrics.corrupted_accuracy.{c}_{s}" for c in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert trials[corrupted].notna().all().all() and trials[corrupted].le(1).all().all()
    assert trials["metrics.mean_corrupted_accuracy"].tolist() == pytest.approx(trials[corrupted].mean(axis=1).tolist())
    assert trials["metrics.ece"].between(0, 1).all()
    excess = [f"metrics.excess_error.{c}_{s}" for c in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert trials["metrics.mean_excess_error"].tolist() == pytest.approx(trials[excess].mean(axis=1).tolist())
    assert trials["metrics.noise_agreement"].between(0, 1).all()
    assert trials["metrics.noise_accuracy.eps_0.1"].gt(0).all()
    client = MlflowClient(four_trials.tracking_uri)
    for run_id in trials["run_id"]:
        assert {f.path for f in client.list_artifacts(run_id, "plots")} == {
            "plots/layer_density.png", "plots/training.png"}
    logged = {f.path for f in client.list_artifacts(four_trials.parent_run_id, "report")}
    assert {"report/four.html", "report/four.png", "report/four_trials.csv"} <= logged
    page = four_trials.report["html"].read_text()
    assert "sweep run FINISHED" in page  # the report is drawn once the sweep's run is closed
    assert page.count("<h2>Trial ") == 3 and four_trials.best()["trial_id"] in page  # the 3 best, with figures
    assert "Add a trial with sparsity.method: dense" in page  # no dense trial: no prune potential, and why


def assert_model_loads_without_raysparse(tracking_uri, run_id):
    """The final model is logged as a torch.export program and a weights_only state_dict."""
    import mlflow
    import torch

    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", tracking_uri=tracking_uri)
    program = torch.export.load(f"{folder}/model.pt2").module()
    state = torch.load(f"{folder}/state_dict.pt", weights_only=True)
    assert program(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert set(state) == {"1.weight", "1.bias", "3.weight", "3.bias"}


def test_data_parallel_trial_has_identical_masks_on_both_ranks(ray_runtime, home):
    from mlflow import MlflowClient

    sweep = tiny_sweep("ddp", num_samples=1, max_concurrent=1,
                       resources={"workers": 2, "cpus_per_worker": 0.5})
    sweep["base"]["epochs"] = 4
    sweep["base"]["sparsity"].update(update_frequency=4, prune_end=3)
    sweep["space"] = {"sparsity.regrowth_ratio": {"uniform": [0.3, 0.5]}}
    result = raysparse.sweep(sweep, home=home, verbose=False)
    assert result.errors == []
    (grid_result,) = list(result.grid)
    assert grid_result.metrics["ranks_with_same_masks"] == 2  # both ranks reported the same hash
    trials = result.to_dataframe()
    assert len(trials) == 1 and trials["status"].iloc[0] == "FINISHED"
    lineage = download_lineage(result.tracking_uri, trials["run_id"].iloc[0])
    assert sum(row["reason"] == "regrow" for row in lineage) >= 3  # several GraNet updates happened
    # the evidence is in the trial's MLflow run too, each epoch's, not only in Tune's result.json
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(trials["run_id"].iloc[0])
    assert run.data.params["resources.workers"] == "2"
    history = client.get_metric_history(run.info.run_id, "ranks_with_same_masks")
    assert sorted((m.step, m.value) for m in history) == [(epoch, 2.0) for epoch in range(1, 5)]


def test_bad_sweep_starts_nothing(tmp_path):
    import ray

    was_running = ray.is_initialized()
    bad = tiny_sweep("bad", objectives={"val_acc": "max"})
    with pytest.raises(ConfigError, match=r"objectives\.val_acc: unknown metric"):
        raysparse.sweep(bad, home=tmp_path)
    assert ray.is_initialized() == was_running
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no Ray results
    unreachable = tiny_sweep("bad", tracking_uri="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"tracking_uri: MLflow tracking server 'http://127.0.0.1:9' cannot be"):
        raysparse.sweep(unreachable, home=tmp_path)
    assert ray.is_initialized() == was_running and list(tmp_path.iterdir()) == []


def test_report_and_ui_commands_read_the_finished_sweep(four_trials, home, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "raysparse.cli", "report", "four", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "4 trials, best first" in done.stdout
    best_id = four_trials.best()["trial_id"]
    assert done.stdout.splitlines()[2].split()[0] == best_id  # first row of the table is the best
    assert (tmp_path / "four_trials.csv").read_text().count("\n") == 5 and (tmp_path / "four.png").stat().st_size
    ui = subprocess.run([sys.executable, "-m", "raysparse.cli", "ui"], capture_output=True, text=True, env=env)
    assert ui.returncode == 0 and four_trials.tracking_uri in ui.stdout  # the running server is reused
    missing = subprocess.run([sys.executable, "-m", "raysparse.cli", "report", "fuor"], capture_output=True,
                             text=True, env=env)
    assert missing.returncode == 2 and "did you mean 'four'" in missing.stderr and "Traceback" not in missing.stderr
    quoted = subprocess.run([sys.executable, "-m", "raysparse.cli", "report", "fo'ur", "--experiment", "four"],
                            capture_output=True, text=True, env=env)
    assert quoted.returncode == 2 and quoted.stderr.startswith("raysparse: error: NAME: got \"fo'ur\"; allowed:")
    assert len(quoted.stderr.splitlines()) == 1


def test_grid_sweep_with_a_dense_reference_measures_prune_potential(ray_runtime, home, tmp_path):
    import os
    import subprocess
    import sys

    import pandas as pd

    raw = tiny_sweep("ladder", sampler="grid", space={
        "sparsity.method": {"choice": ["dense", "gmp"]},
        "sparsity.final_sparsity": {"choice": [0.5, 0.9], "when": {"sparsity.method": ["gmp"]}},
    })
    del raw["num_samples"]  # a grid runs each of its points once
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "severities": [5], "noise_eps": [0.2]}
    result = raysparse.sweep(raw, home=home, verbose=False)
    trials = result.to_dataframe()
    assert sorted(zip(trials["params.sparsity.method"], trials["metrics.density"].round(2))) == [
        ("dense", 1.0), ("gmp", 0.1), ("gmp", 0.5)]

    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "raysparse.cli", "potential", "ladder", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "ladder_potential.csv", index_col=0)
    dense = trials[trials["params.sparsity.method"] == "dense"].iloc[0]
    pruned = trials[trials["params.sparsity.method"] == "gmp"]
    columns = {"clean": "metrics.test_accuracy", "contrast_5": "metrics.corrupted_accuracy.contrast_5",
               "noise_eps_0.2": "metrics.noise_accuracy.eps_0.2"}
    for distribution, column in columns.items():
        within = pruned[pruned[column] >= dense[column] - 0.005]
        expected = (1 - within["metrics.density"]).round(4).max() if len(within) else 0.0
        assert table.loc[distribution, "gmp"] == pytest.approx(expected)
    page = result.report["html"].read_text()
    assert "The largest sparsity whose main task metric" in page and "Not measured" not in page
    assert "contrast_5" in done.stdout


def test_exit_status_says_whether_any_trial_succeeded_and_the_report_hint_works(ray_runtime, home, tmp_path,
                                                                              monkeypatch, capsys):
    """The CLI (in this process, on the shared Ray runtime and MLflow server), two sweeps in one MLflow
    experiment (``experiment_name``) from one file: every trial failing exits 1 with a summary
    saying so; one trial of two failing exits 0. The printed ``raysparse report`` command finds a
    sweep whose experiment has another name than the sweep."""
    import yaml

    from raysparse.cli import main

    raw = tiny_sweep("partial", sampler="grid", max_concurrent=1, experiment_name="shared")
    raw["base"]["epochs"] = 1
    raw["base"]["sparsity"].update(prune_end=1)
    raw["base"]["optimizer"]["nesterov"] = False
    # adam with nesterov is a bad config, and the grid's first point: --num-samples 1 is that one alone
    raw["space"] = {"optimizer.nesterov": {"choice": [True, False]}, "optimizer.name": {"choice": ["adam", "sgd"]}}
    del raw["num_samples"]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("RAYSPARSE_HOME", str(home))
    capsys.readouterr()

    assert main(["sweep", str(path), "--name", "allfailed", "--num-samples", "1"]) == 1
    out, err = capsys.readouterr()
    assert "sweep 'allfailed' failed in" in out
    assert "s, every trial failed: 0 finished, 0 stopped early, 1 failed" in out
    assert "failed trial" in err and "optimizer.nesterov" in err

    assert main(["sweep", str(path), "--name", "partial", "--num-samples", "2"]) == 0
    out, err = capsys.readouterr()
    assert "sweep 'partial' done in" in out and "1 finished, 0 stopped early, 1 failed" in out
    hint = out.strip().splitlines()[-1].split("redraw the report:")[1].split()
    assert hint == ["raysparse", "report", "partial", "--experiment", "shared"]
    assert main([*hint[1:], "--out", str(tmp_path / "report")]) == 0
    assert capsys.readouterr().out.startswith("sweep 'partial' (FINISHED), 2 trials")


def test_a_robustness_objective_is_searched_on_the_last_report(ray_runtime, home):
    """Robustness metrics come once, at the end; Tune, which wants every objective in every
    result, must still take the sweep (it refused it with a ValueError before)."""
    raw = tiny_sweep("robust_objective", num_samples=2,
                     objectives={"val_accuracy": "max", "mean_corrupted_accuracy": "max"})
    raw["base"]["epochs"] = 2
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "severities": [1], "noise_eps": [0.1], "split": "val"}
    trials = raysparse.sweep(raw, home=home, verbose=False).to_dataframe()
    assert list(trials["status"]) == ["FINISHED", "FINISHED"]
    assert trials["metrics.mean_corrupted_accuracy"].between(0, 1).all()
