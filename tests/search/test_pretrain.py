"""The dense stage (``pretrain:``) on real Ray, MLflow and Optuna: trained once, before the trials,
in a tagged child run of its own that is not a trial; oneshot trials start from its weights and
compare with it (robustness.reference); it is the dense row of prune potential; a resumed sweep
reuses it, and trains it again when the driver had died while pretraining."""

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import raysparse
from raysparse.report import stage_line, sweep_potential
from raysparse.search.pretrain import stage_file
from raysparse.tracking import download_masks, load_sweep
from tests.search.conftest import tiny_sweep

NAME = "pretrained"


def stage_runs(uri, experiment=NAME):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.`raysparse.stage` = 'pretrain'")


@pytest.fixture(scope="module")
def pretrained(ray_runtime, home):
    """2 oneshot trials (50% and 80%) pruning the stage's network at once (prune_end 0) and
    fine-tuning it at a learning rate so small that the first step barely moves a weight."""
    raw = tiny_sweep(NAME, sampler="grid", pretrain={"epochs": 3, "optimizer": {"lr": 0.1}})
    del raw["num_samples"]
    raw["base"].update(epochs=2, measure_latency=False)
    raw["base"]["sparsity"] = {"method": "oneshot", "final_sparsity": 0.8, "prune_end": 0, "distribution": "erk"}
    raw["base"]["optimizer"]["lr"] = 0.0005
    raw["base"]["robustness"] = {"corruptions": ["contrast"], "severities": [5]}  # reference: the stage
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.5, 0.8]}}
    return raysparse.sweep(raw, home=home, verbose=False)


def test_the_stage_trains_once_in_a_tagged_child_run_that_is_not_a_trial(pretrained, home):
    (stage,) = stage_runs(pretrained.tracking_uri)
    assert stage.info.status == "FINISHED"
    assert stage.data.tags["raysparse.role"] == "stage"
    assert stage.data.tags["mlflow.parentRunId"] == pretrained.parent_run_id
    params = stage.data.params
    assert (params["epochs"], params["optimizer.lr"], params["sparsity.method"]) == ("3", "0.1", "dense")
    history = MlflowClient(pretrained.tracking_uri).get_metric_history(stage.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]  # per epoch, as a trial's
    logged = {f.path for f in MlflowClient(pretrained.tracking_uri).list_artifacts(stage.info.run_id, "model")}
    assert "model/state_dict.pt" in logged
    assert Path(pretrained.sweep.pretrain_file) == stage_file(home / "ray_results", NAME)
    assert Path(pretrained.sweep.pretrain_file).is_file()
    parent = MlflowClient(pretrained.tracking_uri).get_run(pretrained.parent_run_id)
    assert parent.data.metrics["pretrain_epochs"] == 3 == pretrained.pretrain_epochs
    assert parent.data.metrics["num_trials"] == 2
    trials = pretrained.to_dataframe()
    assert len(trials) == 2 and stage.info.run_id not in set(trials["run_id"])
    assert pretrained.best()["run_id"] != stage.info.run_id
    assert pretrained.stage()["run_id"] == stage.info.run_id


def test_oneshot_trials_start_from_the_stage_and_compare_with_it(pretrained):
    stage_weights = torch.load(pretrained.sweep.pretrain_file, weights_only=True)
    for trial in pretrained.to_dataframe().itertuples():
        params = MlflowClient(pretrained.tracking_uri).get_run(trial.run_id).data.params
        assert params["init_from"] == pretrained.sweep.pretrain_file
        assert params["robustness.reference"] == pretrained.sweep.pretrain_file
        for layer, mask in download_masks(pretrained.tracking_uri, trial.run_id).items():
            kept = int(mask.sum())
            magnitude = stage_weights[f"{layer}.weight"].abs().flatten()
            largest = torch.zeros_like(magnitude, dtype=torch.bool)
            largest[magnitude.topk(kept).indices] = True
            # pruned at step 0 of fine-tuning: the mask keeps the stage's largest weights
            # (a weight at the threshold may swap with its neighbour after one tiny step)
            assert (largest & mask.flatten()).sum() >= 0.97 * kept, layer
    assert set(pretrained.to_dataframe()["status"]) == {"FINISHED"}
    assert pretrained.to_dataframe()["metrics.mean_excess_error"].notna().all()  # compared with the stage


def test_the_report_names_the_stage_and_prune_potential_takes_its_dense_row(pretrained):
    data = load_sweep(pretrained.tracking_uri, NAME)
    line = stage_line(data.stage)
    assert line.startswith("dense stage: 3 epochs, val accuracy 0.") and data.stage["run_id"] in line
    assert line in pretrained.report["html"].read_text()
    assert sweep_potential(data.trials, 0.5)[0] is None  # the trials are all pruned
    table, _ = sweep_potential(data.trials, 0.5, data.stage)
    assert set(table.columns) == {"oneshot"} and {"clean", "contrast_5"} <= set(table.index)


def test_a_resumed_sweep_reuses_the_stage_or_trains_it_again_if_it_never_finished(pretrained, home, capsys):
    client = MlflowClient(pretrained.tracking_uri)
    (before,) = stage_runs(pretrained.tracking_uri)
    written = Path(pretrained.sweep.pretrain_file).stat().st_mtime_ns
    raysparse.resume_sweep(NAME, home=home)
    (reused,) = stage_runs(pretrained.tracking_uri)
    assert reused.info.end_time == before.info.end_time
    assert Path(pretrained.sweep.pretrain_file).stat().st_mtime_ns == written
    assert f"dense stage: reused run {before.info.run_id}" in capsys.readouterr().out

    client.update_run(before.info.run_id, status="RUNNING")  # as a driver killed while pretraining leaves it
    resumed = raysparse.resume_sweep(NAME, home=home, verbose=False)
    (again,) = stage_runs(pretrained.tracking_uri)  # the same run, trained again
    assert again.info.run_id == before.info.run_id and again.info.status == "FINISHED"
    assert again.info.end_time > before.info.end_time
    assert Path(pretrained.sweep.pretrain_file).stat().st_mtime_ns > written
    history = client.get_metric_history(again.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch once
    assert len(resumed.to_dataframe()) == 2
