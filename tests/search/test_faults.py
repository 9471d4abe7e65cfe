"""Faults on real components: a trial process killed mid-training is retried from its checkpoint
and ends as if never interrupted; a diverging trial fails with its reason and is not retrained;
a sweep whose driver is killed is resumed with `raysparse sweep --resume NAME`."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml
from mlflow import MlflowClient

import raysparse
from raysparse.sparsity.masks import masks_hash
from raysparse.tracking import (
    TrialRun,
    download_lineage,
    download_masks,
    ensure_local_server,
    load_sweep,
    masks_at_step,
)
from tests.search.conftest import logged_steps, tiny_sweep


def wait_for(condition, timeout=180, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def child_runs(uri, experiment):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.`raysparse.role` = 'trial'")


def pareto_of(data):
    from raysparse.report import pareto_front

    return pareto_front(data.trials, [("metrics.val_accuracy", "max"), ("metrics.density", "min")])


def trial_processes():
    """This test's Ray trial actors (its Ray runtime's workers, not another sweep's on this machine):
    their process title is `ray::ImplicitFunc...`."""
    return [p for p in psutil.Process().children(recursive=True) if _title(p).startswith("ray::ImplicitFunc")]


def _title(process):
    try:
        return (process.cmdline() or [""])[0]
    except psutil.Error:  # it ended meanwhile
        return ""


def one_trial(name, epochs):
    raw = tiny_sweep(name, sampler="grid", max_concurrent=1, checkpoint_interval=0, max_failures=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    raw["base"]["epochs"] = epochs
    raw["base"]["model"] = {"name": "mlp", "hidden": [256, 256]}
    raw["base"]["sparsity"].update(prune_end=epochs // 2, update_frequency=10)
    del raw["num_samples"]
    return raw


def test_killed_trial_is_retried_from_its_checkpoint_and_ends_as_if_uninterrupted(ray_runtime, home):
    epochs = 14  # a checkpoint every epoch: enough to kill the trial mid-way, 6 epochs before its end
    raw = one_trial("killed", epochs=epochs)
    results = []
    sweep = threading.Thread(target=lambda: results.append(raysparse.sweep(raw, home=home, verbose=False)))
    uri = ensure_local_server(home)  # the one the sweep will use
    sweep.start()

    def trained_some_epochs():
        runs = child_runs(uri, "killed")
        return runs and 3 <= runs[0].data.metrics.get("epoch", 0) <= epochs - 6  # killed mid-way: epochs left

    wait_for(trained_some_epochs, what="a few epochs")
    (victim,) = trial_processes()
    victim.send_signal(signal.SIGKILL)  # the trial process dies mid-training, as on a lost node
    sweep.join(timeout=300)
    (result,) = results
    assert result.errors == []

    trials = result.to_dataframe()
    assert len(trials) == 1 and trials["status"].iloc[0] == "FINISHED"  # continued, not duplicated
    run_id = trials["run_id"].iloc[0]
    lineage = download_lineage(uri, run_id)
    resumes = [i for i, row in enumerate(lineage) if row["reason"].startswith("resume at epoch")]
    assert len(resumes) == 1
    resume = lineage[resumes[0]]
    # the retry starts from the checkpoint's masks and weights: the killed attempt hashed them when it
    # saved the checkpoint, the retry when it restored them, each in its own process
    checkpoint = [row for row in lineage[: resumes[0]] if row["reason"].startswith("checkpoint at epoch")][-1]
    epoch = resume["reason"].removeprefix("resume at epoch ")
    assert checkpoint["reason"] == f"checkpoint at epoch {epoch}" and checkpoint["step"] == resume["step"]
    assert (resume["hash"], resume["weights_hash"]) == (checkpoint["hash"], checkpoint["weights_hash"])
    assert resume["hash"] == resume["parent_hash"] == lineage[resumes[0] - 1]["hash"]
    assert all(a["step"] <= b["step"] for a, b in zip(lineage, lineage[1:]))  # the lost attempt's rows are gone
    assert logged_steps(uri, run_id) == {key: list(range(1, epochs + 1)) for key in logged_steps(uri, run_id)}

    # and the retried trial ends bit-identical to the same config trained without interruption
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial process (Ray gives it one CPU)
    try:
        final = raysparse.train(result.sweep.trial_config({"sparsity.final_sparsity": 0.8}))
    finally:
        torch.set_num_threads(threads)
    assert trials["metrics.val_accuracy"].iloc[0] == final["val_accuracy"]
    assert trials["metrics.train_loss"].iloc[0] == final["train_loss"]
    assert masks_hash(download_masks(uri, run_id)) == lineage[-1]["hash"]
    # the retry's first row is a full snapshot (its TrialRun knows no parent), and so is the run's end;
    # every step rebuilds through the lineage the retry left, to the masks its last row there logged
    assert resume["encoding"] == lineage[-1]["encoding"] == "full"
    last_at = {row["step"]: row["hash"] for row in lineage}
    assert all(masks_hash(masks_at_step(uri, run_id, step)) == last_at[step] for step in last_at)


def test_killed_trial_without_a_checkpoint_starts_over_and_logs_each_epoch_once(ray_runtime, home):
    epochs = 16
    raw = one_trial("nockpt", epochs=epochs)
    raw["checkpoint_interval"] = 3600  # never reached: the retry starts at epoch 0, as on digits at 60 s
    results = []
    sweep = threading.Thread(target=lambda: results.append(raysparse.sweep(raw, home=home, verbose=False)))
    uri = ensure_local_server(home)
    sweep.start()

    def trained_some_epochs():
        runs = child_runs(uri, "nockpt")
        return runs and 3 <= runs[0].data.metrics.get("epoch", 0) <= epochs - 6

    wait_for(trained_some_epochs, what="a few epochs")
    (victim,) = trial_processes()
    victim.send_signal(signal.SIGKILL)
    sweep.join(timeout=300)
    (result,) = results
    assert result.errors == [] and failures_recorded(result) == 1  # it was killed once, then retried

    trials = result.to_dataframe()
    assert len(trials) == 1 and trials["status"].iloc[0] == "FINISHED"
    run_id = trials["run_id"].iloc[0]
    # the lost attempt's epochs are not in the history a second time
    assert logged_steps(uri, run_id) == {key: list(range(1, epochs + 1)) for key in logged_steps(uri, run_id)}
    lineage = download_lineage(uri, run_id)
    rows = [(row["step"], row["reason"], row["hash"]) for row in lineage]
    assert len(set(rows)) == len(rows) and rows == sorted(rows, key=lambda row: row[0])  # one attempt's rows
    assert masks_hash(download_masks(uri, run_id)) == lineage[-1]["hash"]


def test_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(ray_runtime, home):
    raw = tiny_sweep("diverge", sampler="grid", max_concurrent=1, max_failures=2)
    raw["space"] = {"optimizer.lr": {"choice": [1.0e12, 0.05]}}
    del raw["num_samples"]
    result = raysparse.sweep(raw, home=home, verbose=False)
    trials = result.to_dataframe().set_index("params.optimizer.lr")
    assert len(trials) == 2  # the refused retries did not open new runs
    assert trials.loc[0.05, "status"] == "FINISHED"
    assert trials.loc[1.0e12, "status"] == "FAILED"
    assert re.match(r"diverged: train_loss is (nan|inf) at epoch 1", trials.loc[1.0e12, "failure_reason"])
    assert len(result.errors) == 1 and "not retrained" in result.errors[0]
    # one retry at most, which read the recorded reason and failed at once (Tune had queued it already)
    assert failures_recorded(result) == 2


def failures_recorded(result):
    """How many failed attempts Tune recorded over the sweep's trials (one entry each in error.txt)."""
    return sum(path.read_text().count("Failure # ") for path in Path(result.grid.experiment_path).glob("*/error.txt"))


def test_a_bad_combination_of_sampled_values_fails_in_its_own_run_once(ray_runtime, home, capsys):
    raw = tiny_sweep("badcombo", sampler="grid", max_concurrent=2, max_failures=2)
    raw["base"]["epochs"] = 1
    raw["base"]["sparsity"].update(prune_end=1)
    raw["base"]["optimizer"]["nesterov"] = False
    # each value alone is valid (so the file is accepted); adam with nesterov is not
    raw["space"] = {"optimizer.name": {"choice": ["sgd", "adam"]}, "optimizer.nesterov": {"choice": [False, True]}}
    del raw["num_samples"]
    result = raysparse.sweep(raw, home=home)
    trials = result.to_dataframe()
    assert len(trials) == 4 and sorted(trials["status"]) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    failed = trials[trials["status"] == "FAILED"].iloc[0]
    assert (failed["params.optimizer.name"], failed["params.optimizer.nesterov"]) == ("adam", "True")
    assert failed["failure_reason"].startswith("bad config: optimizer.nesterov: got True")
    assert len(result.errors) == 1 and failures_recorded(result) == 1  # not retried
    assert "3 finished, 0 stopped early, 1 failed" in capsys.readouterr().out


def test_killed_driver_is_resumed_and_finished_trials_are_not_rerun(home, tmp_path):
    raw = tiny_sweep("resumed", sampler="grid", max_concurrent=1, checkpoint_interval=0,
                     objectives={"val_accuracy": "max", "density": "min"})
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.5, 0.6, 0.7, 0.8]}}
    raw["base"]["epochs"] = 12  # a checkpoint every epoch; the driver is killed 4 epochs or more into a trial
    raw["base"]["model"] = {"name": "mlp", "hidden": [256, 256]}
    del raw["num_samples"]
    path = tmp_path / "resumed.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    uri = ensure_local_server(home)  # the one the sweep will use
    driver = subprocess.Popen([sys.executable, "-m", "raysparse.cli", "sweep", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def one_finished_one_running():
        runs = child_runs(uri, "resumed")
        running = [r for r in runs if r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) >= 4]
        return running and any(r.info.status == "FINISHED" for r in runs)

    wait_for(one_finished_one_running, timeout=240, what="a finished and a running trial")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started, at once
    driver.wait(timeout=60)
    before = {r.data.tags["raysparse.trial_id"]: r for r in child_runs(uri, "resumed")}
    finished_before = {t: r.info.end_time for t, r in before.items() if r.info.status == "FINISHED"}
    # what a trial started after Tune's last snapshot leaves behind: a run Tune will not know
    parent_id = next(iter(before.values())).data.tags["mlflow.parentRunId"]
    lost = TrialRun.open(uri, next(iter(before.values())).info.experiment_id, parent_id, "lost00", run_name="lost",
                         params=raw["base"])

    resuming = time.monotonic()
    resumed = subprocess.run([sys.executable, "-m", "raysparse.cli", "sweep", "--resume", "resumed"], env=env,
                             capture_output=True, text=True, timeout=600)
    took = time.monotonic() - resuming
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the progress line's clock counts from the resume, as the summary's does, not from the killed driver's start
    elapsed = [int(s) for s in re.findall(r"^\[\s*(\d+)s\] trials", resumed.stdout, re.MULTILINE)]
    assert elapsed and max(elapsed) <= took, (elapsed, took)
    data = load_sweep(uri, "resumed")
    assert data.parent_status == "FINISHED"
    assert len(data.trials) == 4 and data.trials["trial_id"].nunique() == 4  # one child run per trial
    assert MlflowClient(uri).get_run(lost.run_id).info.lifecycle_stage == "deleted"
    assert f"run {lost.run_id} of a trial lost with the stopped driver" in resumed.stderr
    front = pareto_of(data)  # and the CLI prints it, as for any sweep with several objectives
    printed = resumed.stdout.split("Pareto front: ")[1].splitlines()[0]
    assert printed.startswith(f"{len(front)} trials: ") and all(t in printed for t in front["trial_id"])
    assert set(data.trials["status"]) == {"FINISHED"}
    after = data.trials.set_index("trial_id")
    for trial_id, end_time in finished_before.items():  # not rerun: the run was not touched again
        assert after.loc[trial_id, "end_time"] == pd.to_datetime(end_time, unit="ms")
    assert sorted(after["params.sparsity.final_sparsity"]) == [0.5, 0.6, 0.7, 0.8]
    interrupted = [t for t, r in before.items() if r.info.status == "RUNNING"]
    for trial_id in interrupted:  # continued from its checkpoint in the same run
        reasons = [row["reason"] for row in download_lineage(uri, after.loc[trial_id, "run_id"])]
        assert any(reason.startswith("resume at epoch") for reason in reasons)


def test_a_sweep_whose_every_trial_fails_says_why(ray_runtime, home):
    raw = tiny_sweep("allbad", sampler="grid", max_concurrent=1, max_failures=2)
    raw["base"]["epochs"] = 1
    raw["base"]["sparsity"].update(prune_end=1)
    raw["base"]["optimizer"]["nesterov"] = False
    raw["space"] = {"optimizer.name": {"choice": ["adam"]}, "optimizer.nesterov": {"choice": [True]}}
    del raw["num_samples"]
    result = raysparse.sweep(raw, home=home, verbose=False)
    assert list(result.to_dataframe()["status"]) == ["FAILED"]
    with pytest.raises(RuntimeError, match=r"reported val_accuracy \(1 trials: 1 failed\); the first failure: bad "
                                           r"config: optimizer\.nesterov"):
        result.best()


def small_mlp(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, num_classes))


def test_a_sweep_failing_on_the_driver_after_start_closes_its_run_and_can_be_resumed(ray_runtime, home):
    """A model factory that builds and trains on the driver (checked before start) but cannot be
    sent to the trials: it guards a cache with a lock, which no pickle can carry. That fails after
    the parent run was created; the run must not stay RUNNING, and the sweep resumes in it."""
    cache_lock = threading.Lock()

    def locked_mlp(input_shape, num_classes):
        with cache_lock:
            return small_mlp(input_shape, num_classes)

    raw = tiny_sweep("unsendable", sampler="grid", max_concurrent=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    raw["base"].update(epochs=1, model={})
    raw["base"]["sparsity"].update(prune_end=1)
    del raw["num_samples"]
    with pytest.raises(Exception, match="lock"):
        raysparse.sweep(raw, model=locked_mlp, home=home, verbose=False)
    uri = ensure_local_server(home)
    failed = load_sweep(uri, "unsendable")
    assert failed.parent_status == "FAILED" and failed.trials.empty
    reason = MlflowClient(uri).get_run(failed.parent_run_id).data.tags["raysparse.failure_reason"]
    assert "lock" in reason and reason.endswith("continue it with: raysparse sweep --resume unsendable")
    state = json.loads((home / "ray_results" / "unsendable" / "raysparse_sweep.json").read_text())
    assert state["parent_run_id"] == failed.parent_run_id  # written before Tune, which never saved a thing

    resumed = raysparse.resume_sweep("unsendable", model=small_mlp, home=home, verbose=False)
    assert resumed.parent_run_id == failed.parent_run_id
    done = load_sweep(uri, "unsendable")
    assert done.parent_status == "FINISHED" and list(done.trials["status"]) == ["FINISHED"]
    assert "raysparse.failure_reason" not in MlflowClient(uri).get_run(done.parent_run_id).data.tags
