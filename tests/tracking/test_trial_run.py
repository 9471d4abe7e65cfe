"""A trial's run against a real MLflow server: isolation between trials, metrics, masks, retries."""

import csv
import json
import threading

import numpy as np
import pytest
import torch
from mlflow import MlflowClient  # tests may read MLflow directly to check what our code wrote

from raysparse.sparsity.masks import masks_hash, unpack_masks
from raysparse.tracking import download_lineage, download_masks, masks_at_step
from tests.tracking.conftest import CONFIG, masked_model, open_trial, prune


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
    assert [r["encoding"] for r in lineage] == ["full", "full"]  # the first row; the run's end
    for row, event in zip(lineage, events):  # rebuilt through the lineage
        logged = masks_at_step(sweep.tracking_uri, run.run_id, row["step"])
        kept, total = sum(int(m.sum()) for m in logged.values()), sum(m.numel() for m in logged.values())
        assert masks_hash(logged) == row["hash"] and kept / total == pytest.approx(row["density"])
        assert all(torch.equal(logged[n], m) for n, m in unpack_masks(event.packed).items())
        assert masks_hash(download_masks(sweep.tracking_uri, run.run_id, row["file"])) == row["hash"]  # full files
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


def test_final_plots_cover_the_epochs_logged_before_a_retry(sweep, tmp_path):
    model, masks = masked_model()
    first = open_trial(sweep, "t0")
    for epoch in (1, 2):
        first.log_epoch({"val_accuracy": 0.3 * epoch, "density": 1.0 - 0.2 * epoch}, step=epoch)
    first.fail("node lost")
    again = open_trial(sweep, "t0")
    again.log_epoch({"val_accuracy": 0.9, "density": 0.5}, step=3)
    assert again.metric_history(["val_accuracy", "density"]) == {
        "val_accuracy": [(1, 0.3), (2, 0.6), (3, 0.9)], "density": [(1, 0.8), (2, 0.6), (3, 0.5)],
    }
    again.log_final(packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=model.state_dict(),
                    config=CONFIG)
    again.finish()
    client = MlflowClient(sweep.tracking_uri)
    assert sorted(f.path for f in client.list_artifacts(again.run_id, "plots")) == [
        "plots/layer_density.png", "plots/training.png"
    ]
    for name in ("layer_density", "training"):
        png = client.download_artifacts(again.run_id, f"plots/{name}.png", str(tmp_path))
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_retry_drops_the_lineage_rows_of_the_lost_attempt_after_its_checkpoint(sweep):
    _, masks = masked_model()
    first = open_trial(sweep, "t0")
    for step, density in ((10, 0.5), (20, 0.3), (30, 0.2)):
        prune(masks, density, step=step, seed=step)
    first.log_mask_events(masks.drain_events())
    first.fail("node lost")  # the checkpoint was written at step 20; step 30 will be redone

    _, retried = masked_model()
    for step, density in ((10, 0.5), (20, 0.3)):  # what loading the checkpoint restores
        prune(retried, density, step=step, seed=step)
    retried.drain_events()
    retried.mark(step=20, reason="resume at epoch 2")
    again = open_trial(sweep, "t0")
    again.log_mask_events(retried.drain_events())
    again.finish()
    lineage = download_lineage(sweep.tracking_uri, again.run_id)
    assert [(r["step"], r["reason"]) for r in lineage] == [(10, "prune to 0.5"), (20, "prune to 0.3"),
                                                           (20, "resume at epoch 2")]
    assert lineage[-1]["hash"] == lineage[-1]["parent_hash"] == lineage[1]["hash"]  # the checkpoint's masks
    assert lineage[-1]["encoding"] == "full"  # its parent is a kept row, not the last one written
    assert all(torch.equal(masks_at_step(sweep.tracking_uri, again.run_id, 20)[n], m) for n, m in retried.masks.items())


def test_a_pbt_exploit_keeps_the_trials_rows_and_says_whose_masks_it_went_on_with(sweep):
    from raysparse.tracking import download_exploits, run_params

    _, masks = masked_model()
    trial = open_trial(sweep, "t1", lr=0.05)
    for epoch, density in ((1, 0.4), (2, 0.3), (3, 0.2)):
        prune(masks, density, step=10 * epoch, seed=epoch)
        trial.log_epoch({"val_accuracy": 0.1 * epoch}, step=epoch)
    trial.log_mask_events(masks.drain_events())

    _, copied = masked_model()  # the restored checkpoint of trial t0 at epoch 2
    prune(copied, 0.25, step=20, seed=7)
    copied.drain_events()
    copied.mark(step=20, reason="resume at epoch 2")
    again = open_trial(sweep, "t1", lr=0.05)
    source = {"source_trial_id": "t0", "source_run_id": "r0", "source_epoch": 2,
              "source_masks_hash": copied.content_hash()}
    again.exploited(source, {"lr": 0.06})
    again.log_mask_events(copied.drain_events())
    again.log_epoch({"val_accuracy": 0.8}, step=3)  # epoch 3 again, from t0's weights: logged, not skipped
    lineage = download_lineage(sweep.tracking_uri, again.run_id)
    assert [r["reason"] for r in lineage] == ["prune to 0.4", "prune to 0.3", "prune to 0.2",
                                              "exploit of trial t0 at epoch 2"]
    assert lineage[-1]["hash"] == source["source_masks_hash"] and lineage[-1]["source_run_id"] == "r0"
    assert again.metric_history(["val_accuracy"])["val_accuracy"] == [(1, 0.1), (2, 0.2), (3, 0.8)]
    assert download_exploits(sweep.tracking_uri, again.run_id) == [{**source, "params": {"lr": 0.06}}]
    assert run_params(sweep.tracking_uri, again.run_id)["lr"] == "0.06"  # the value it trains with now
    assert MlflowClient(sweep.tracking_uri).get_run(again.run_id).data.params["lr"] == "0.05"  # write-once

    copied.mark(step=20, reason="resume at epoch 2")  # a retry after the exploit, from its own checkpoint
    retried = open_trial(sweep, "t1", lr=0.06)
    retried.log_mask_events(copied.drain_events())
    retried.finish()
    rows = download_lineage(sweep.tracking_uri, retried.run_id)
    assert [r["reason"] for r in rows][-2:] == ["exploit of trial t0 at epoch 2", "resume at epoch 2"]
    assert len(rows) == 5  # the rows before the exploit are history, even those after step 20
    # another trial's masks, then a retry's: neither is a delta on the row before it
    assert [r["encoding"] for r in rows][-2:] == ["full", "full"]
    rebuilt = masks_at_step(sweep.tracking_uri, retried.run_id, 20)  # the last row there: this trial's now
    assert all(torch.equal(rebuilt[n], m) for n, m in copied.masks.items())
    assert all(torch.equal(masks_at_step(sweep.tracking_uri, retried.run_id, 30)[n], m) for n, m in masks.masks.items())
