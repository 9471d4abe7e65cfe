"""Reading a sweep back from a real MLflow server: one row per trial, final metrics, helpful errors."""

import pytest

from raysparse.errors import ConfigError
from raysparse.tracking import load_sweep
from tests.tracking.conftest import log_two_trials_one_left_running


def test_load_sweep_reports_final_metrics_statuses_and_numeric_params(sweep):
    log_two_trials_one_left_running(sweep)
    sweep.close_trial("t1", "KILLED", reason="stopped early by ASHA")
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


def test_unknown_sweep_or_experiment_lists_what_exists(sweep):
    with pytest.raises(ConfigError, match="available: quickstart") as caught:
        load_sweep(sweep.tracking_uri, sweep.experiment_name, "quikstart")
    assert caught.value.field == "name" and "did you mean 'quickstart'" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; available: Default, ") as caught:
        load_sweep(sweep.tracking_uri, "nope")
    # the session's store holds many experiments (the listing is cut in the middle); a near miss names its own
    with pytest.raises(ConfigError, match=f"did you mean '{sweep.experiment_name}'"):
        load_sweep(sweep.tracking_uri, sweep.experiment_name + "s")
