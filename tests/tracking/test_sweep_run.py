"""The driver's sweep run against a real MLflow server: closing trials' runs, reattaching."""

import pytest

from raysparse.errors import ConfigError
from raysparse.tracking import SweepRun, load_sweep
from raysparse.tracking.naming import FINAL_UPLOAD_TAG, PROCESS_TAG
from tests.tracking.conftest import log_two_trials_one_left_running


def test_close_trial_kills_running_children_and_leaves_finished_ones(sweep):
    log_two_trials_one_left_running(sweep)
    assert sweep.close_trial("t1", "KILLED", reason="stopped early by ASHA") is True
    assert sweep.close_trial("t0", "KILLED") is False  # already finished: left as it was
    assert {c.trial_id: c.status for c in sweep.child_runs()} == {"t0": "FINISHED", "t1": "KILLED"}


def test_runs_a_process_still_uploaded_are_left_to_it_waited_for_and_failed_when_it_dies(sweep):
    from tests.tracking.conftest import open_trial

    runs = {trial_id: open_trial(sweep, trial_id) for trial_id in ("t0", "t1", "t2")}
    runs["t0"].set_tags({PROCESS_TAG: "node:1", FINAL_UPLOAD_TAG: "node:1"})  # returned; its process uploads
    runs["t1"].set_tags({PROCESS_TAG: "node:2", FINAL_UPLOAD_TAG: "node:2"})
    runs["t2"].set_tags({PROCESS_TAG: "node:1"})  # trains in t0's process
    assert sweep.close_trial("t0", "KILLED", leave_uploading=True) is False  # it ends itself
    assert sorted(sweep.wait_for_final_uploads(0)) == ["t0", "t1"]
    runs["t1"].finish()
    assert sweep.close_uploads_of("t2", reason="its process died") == ["t0"]  # t0's artifacts never come
    assert sweep.wait_for_final_uploads(0) == []
    assert {c.trial_id: c.status for c in sweep.child_runs()} == {"t0": "FAILED", "t1": "FINISHED", "t2": "RUNNING"}


def test_unfinished_runs_of_trials_tune_does_not_know_are_moved_to_the_deleted_runs(sweep):
    from mlflow import MlflowClient

    log_two_trials_one_left_running(sweep)  # t1: lost with a killed driver, before Tune's snapshot
    lost = [c.run_id for c in sweep.child_runs() if c.trial_id == "t1"]
    assert sweep.discard_unknown({"t0", "t2"}, reason="lost with the driver") == (lost, [])
    assert [c.trial_id for c in sweep.child_runs()] == ["t0"]  # one child run per trial Tune knows
    assert load_sweep(sweep.tracking_uri, sweep.experiment_name).trials["trial_id"].tolist() == ["t0"]
    kept = MlflowClient(sweep.tracking_uri).get_run(lost[0])  # still in the store, restorable
    assert (kept.info.lifecycle_stage, kept.info.status) == ("deleted", "KILLED")
    assert kept.data.tags["raysparse.failure_reason"] == "lost with the driver"
    assert kept.data.metrics["val_accuracy"] == 0.7


def test_attach_reopens_a_finished_sweep_and_resume_marks_it_running(sweep):
    log_two_trials_one_left_running(sweep)
    sweep.close_trial("t1", "KILLED", reason="stopped early by ASHA")
    sweep.finish()

    reopened = SweepRun.attach(sweep.tracking_uri, sweep.experiment_name, sweep.run_id)
    assert reopened.run_id == sweep.run_id
    assert load_sweep(sweep.tracking_uri, sweep.experiment_name).parent_status == "FINISHED"  # e.g. for a report
    SweepRun.attach(sweep.tracking_uri, sweep.experiment_name, sweep.run_id, resume=True)
    assert load_sweep(sweep.tracking_uri, sweep.experiment_name).parent_status == "RUNNING"


def test_attach_refuses_a_run_that_is_not_a_sweep_of_the_experiment(sweep):
    with pytest.raises(ConfigError, match="not a sweep run"):
        SweepRun.attach(sweep.tracking_uri, "Default", sweep.run_id)


def test_a_finished_run_of_a_trial_tune_does_not_know_is_never_deleted(sweep):
    """A trial that finished after the stopped driver's last snapshot is trained work: it stays."""
    log_two_trials_one_left_running(sweep)
    finished = [c.run_id for c in sweep.child_runs() if c.trial_id == "t0"]
    left = [c.run_id for c in sweep.child_runs() if c.trial_id == "t1"]
    assert sweep.discard_unknown(set(), reason="lost with the driver") == (left, finished)
    assert [(c.trial_id, c.status) for c in sweep.child_runs()] == [("t0", "FINISHED")]
