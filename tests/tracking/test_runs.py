"""Sweep and trial runs against a real MLflow server (one per module, started like a sweep does)."""

import csv
import json
import threading

import numpy as np
import pytest
import torch
from mlflow import MlflowClient  # tests may read MLflow directly to check what our code wrote
from torch import nn

from raysparse.errors import ConfigError
from raysparse.sparsity.masks import MaskSet, masks_hash, prunable_weights, unpack_masks
from raysparse.tracking import (
    SweepRun,
    TrialRun,
    download_lineage,
    download_masks,
    ensure_local_server,
    flatten_metrics,
    flatten_params,
    load_sweep,
    stop_local_server,
)

CONFIG = {"seed": 0, "model": {"name": "mlp", "hidden": [64, 32]}, "sparsity": {"method": "gmp", "final_sparsity": 0.9}}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    home = tmp_path_factory.mktemp("raysparse-home")
    yield ensure_local_server(home)
    stop_local_server(home)


@pytest.fixture
def sweep(tracking_uri, request):
    return SweepRun.start(tracking_uri, f"exp-{request.node.name}", "quickstart", params=CONFIG, sweep_text="a: 1\n")


def open_trial(sweep, trial_id, **params):
    return TrialRun.open(sweep.tracking_uri, sweep.experiment_id, sweep.run_id, trial_id, run_name=f"run-{trial_id}",
                         params={**CONFIG, **params})


def masked_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return model, MaskSet(prunable_weights(model))


def prune(masks, density, step, seed):
    g = torch.Generator().manual_seed(seed)
    masks.update({n: torch.rand(m.shape, generator=g) < density for n, m in masks.masks.items()}, step=step,
                 reason=f"prune to {density}")


def test_params_flatten_with_dots_and_long_values_are_truncated():
    flat = flatten_params({**CONFIG, "notes": "x" * 7000, "extra": {}})
    assert flat["sparsity.final_sparsity"] == "0.9" and flat["model.hidden"] == "[64, 32]"
    assert flat["extra"] == "{}"
    assert len(flat["notes"]) == 6000 and flat["notes"].endswith("...[truncated]")


def test_metric_names_are_dotted_and_sanitized():
    flat = flatten_metrics({"loss": np.float32(0.5), "ok": True, "layer_density": {"blocks/0:conv": 0.25}})
    assert flat == {"loss": 0.5, "ok": 1.0, "layer_density.blocks_0_conv": 0.25}


def test_trials_logged_from_two_threads_land_in_their_own_child_runs(sweep):
    start, errors, run_ids = threading.Barrier(2), [], {}

    def trial(index):
        try:
            start.wait()
            run = open_trial(sweep, f"t{index}", lr=0.1 * (index + 1))
            run_ids[index] = run.run_id
            for epoch in range(1, 4):
                run.log_epoch({"epoch": epoch, "train_loss": index + 1 / epoch, "val_accuracy": np.float64(epoch / 10),
                               "layer_density": {"0": 0.5 + index, "2": 0.25}}, step=epoch)
            run.finish()
        except Exception as error:  # surfaced by the assert below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    children = sweep.child_runs()
    assert sorted(c.trial_id for c in children) == ["t0", "t1"] and {c.status for c in children} == {"FINISHED"}
    client = MlflowClient(sweep.tracking_uri)
    for index, run_id in run_ids.items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == sweep.run_id
        assert run.data.tags["raysparse.trial_id"] == f"t{index}"
        assert run.data.params["sparsity.final_sparsity"] == "0.9" and float(run.data.params["lr"]) == 0.1 * (index + 1)
        history = client.get_metric_history(run_id, "train_loss")
        assert sorted((m.step, m.value) for m in history) == [(e, index + 1 / e) for e in (1, 2, 3)]
        assert run.data.metrics["layer_density.0"] == 0.5 + index and run.data.metrics["layer_density.2"] == 0.25


def test_non_numeric_metric_raises_type_error_naming_the_key_and_logs_nothing(sweep):
    run = open_trial(sweep, "t0")
    with pytest.raises(TypeError, match="'optimizer'"):
        run.log_epoch({"train_loss": 0.1, "optimizer": "sgd"}, step=1)
    with pytest.raises(TypeError, match="'layer_density.fc'"):
        run.log_epoch({"layer_density": {"fc": None}}, step=1)
    assert MlflowClient(sweep.tracking_uri).get_run(run.run_id).data.metrics == {}
    run.finish()


def test_reopened_trial_continues_its_run_and_keeps_earlier_lineage(sweep):
    _, masks = masked_model()
    first = open_trial(sweep, "t0")
    prune(masks, 0.5, step=10, seed=1)
    first.log_mask_events(masks.drain_events())
    first.fail("node lost")

    again = open_trial(sweep, "t0")
    assert again.run_id == first.run_id
    assert [c.trial_id for c in sweep.child_runs()] == ["t0"]
    run = MlflowClient(sweep.tracking_uri).get_run(again.run_id)
    assert run.info.status == "RUNNING" and "raysparse.failure_reason" not in run.data.tags
    prune(masks, 0.3, step=20, seed=2)
    again.log_mask_events(masks.drain_events())
    again.finish()
    assert [row["step"] for row in download_lineage(sweep.tracking_uri, again.run_id)] == [10, 20]


def test_logged_masks_round_trip_with_the_lineage_hash_and_density(sweep, tmp_path):
    model, masks = masked_model()
    run = open_trial(sweep, "t0")
    prune(masks, 0.5, step=5, seed=1)
    prune(masks, 0.2, step=9, seed=2)
    events = masks.drain_events()
    run.log_mask_events(events)
    run.log_final(packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=model.state_dict(),
                  config=CONFIG)
    run.finish()

    lineage = download_lineage(sweep.tracking_uri, run.run_id)
    assert [(r["step"], r["hash"], r["parent_hash"]) for r in lineage] == [
        (e.step, e.hash, e.parent_hash) for e in events
    ]
    for row in lineage:
        logged = download_masks(sweep.tracking_uri, run.run_id, row["file"])
        kept, total = sum(int(m.sum()) for m in logged.values()), sum(m.numel() for m in logged.values())
        assert masks_hash(logged) == row["hash"] and kept / total == pytest.approx(row["density"])
    final = download_masks(sweep.tracking_uri, run.run_id)
    assert masks_hash(final) == masks.content_hash() == lineage[-1]["hash"]

    client = MlflowClient(sweep.tracking_uri)
    state = torch.load(client.download_artifacts(run.run_id, "model/state_dict.pt", str(tmp_path)), weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with open(client.download_artifacts(run.run_id, "layer_density.csv", str(tmp_path))) as table:
        rows = list(csv.DictReader(table))
    assert [(r["layer"], float(r["density"]), int(r["kept"]), int(r["total"])) for r in rows] == [
        (n, masks.layer_density()[n], int(m.sum()), m.numel()) for n, m in masks.masks.items()
    ]
    with open(client.download_artifacts(run.run_id, "model/config.json", str(tmp_path))) as config:
        assert json.load(config) == CONFIG
    assert unpack_masks(masks.pack()).keys() == final.keys()


def test_close_trial_kills_running_children_and_load_sweep_reports_final_metrics(sweep):
    for trial_id, final_accuracy in (("t0", 0.9), ("t1", 0.7)):
        run = open_trial(sweep, trial_id, lr=0.05)
        for epoch, accuracy in enumerate((0.5, final_accuracy), start=1):
            run.log_epoch({"val_accuracy": accuracy, "layer_density": {"fc": 0.1 * epoch}}, step=epoch)
        if trial_id == "t0":
            run.finish()  # t1 stays RUNNING, as when Tune kills the trial process
    assert sweep.close_trial("t1", "KILLED", reason="stopped early by ASHA") is True
    assert sweep.close_trial("t0", "KILLED") is False  # already finished: left as it was
    assert {c.trial_id: c.status for c in sweep.child_runs()} == {"t0": "FINISHED", "t1": "KILLED"}
    sweep.finish()

    data = load_sweep(sweep.tracking_uri, sweep.experiment_name, "quickstart")
    assert data.parent_run_id == sweep.run_id and data.parent_status == "FINISHED"
    assert data.params["sparsity.method"] == "gmp"
    trials = data.trials.set_index("trial_id")
    assert len(trials) == 2 and trials.loc["t1", "status"] == "KILLED"
    assert trials.loc["t1", "failure_reason"] == "stopped early by ASHA"
    assert trials["metrics.val_accuracy"].to_dict() == {"t0": 0.9, "t1": 0.7}
    assert trials["metrics.layer_density.fc"].tolist() == pytest.approx([0.2, 0.2])
    assert trials["params.sparsity.final_sparsity"].tolist() == [0.9, 0.9]  # numeric: ready for a Pareto front
    assert trials["params.sparsity.method"].tolist() == ["gmp", "gmp"]

    reopened = SweepRun.attach(sweep.tracking_uri, sweep.experiment_name, sweep.run_id)
    assert reopened.run_id == sweep.run_id
    assert load_sweep(sweep.tracking_uri, sweep.experiment_name).parent_status == "FINISHED"  # e.g. for a report
    SweepRun.attach(sweep.tracking_uri, sweep.experiment_name, sweep.run_id, resume=True)
    assert load_sweep(sweep.tracking_uri, sweep.experiment_name).parent_status == "RUNNING"


def test_unknown_sweep_or_experiment_lists_what_exists(sweep):
    with pytest.raises(ConfigError, match="available: quickstart") as caught:
        load_sweep(sweep.tracking_uri, sweep.experiment_name, "quikstart")
    assert caught.value.field == "name" and "did you mean 'quickstart'" in str(caught.value)
    with pytest.raises(ConfigError, match=f"unknown experiment 'nope'; available: .*{sweep.experiment_name}"):
        load_sweep(sweep.tracking_uri, "nope")
    with pytest.raises(ConfigError, match="not a sweep run"):
        SweepRun.attach(sweep.tracking_uri, "Default", sweep.run_id)
