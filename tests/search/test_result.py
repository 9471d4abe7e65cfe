"""SweepResult on a sweep as the session's MLflow server holds it: ``best()`` and ``pareto()``
choose among finished trials only (a failed or early-stopped trial's metrics are from an epoch
it did not train past), and say how the trials ended when none finished."""

import pytest

from raysparse.search.result import SweepResult
from raysparse.search.spaces import load_sweep
from raysparse.tracking import SweepRun, TrialRun
from tests.search.conftest import tiny_sweep


def recorded_sweep(tracking_uri, name, trials):
    """A two-objective sweep whose trials, ``(status, val_accuracy, density)``, ended as given."""
    sweep = load_sweep(tiny_sweep(name, objectives={"val_accuracy": "max", "density": "min"}))
    parent = SweepRun.start(tracking_uri, name, name, params={"sweep": {"objectives": dict(sweep.objectives)}})
    for i, (status, accuracy, density) in enumerate(trials):
        run = TrialRun.open(tracking_uri, parent.experiment_id, parent.run_id, f"t{i}", run_name=f"t{i}",
                            params=sweep.base)
        run.log_epoch({"val_accuracy": accuracy, "density": density}, step=1)
        if status == "FAILED":
            run.fail("diverged: the loss is nan")
        else:
            run.finish(status)
    parent.finish()
    return SweepResult(sweep, [], tracking_uri, name, parent.run_id, seconds=1.0)


def test_best_and_pareto_raise_saying_how_the_trials_ended_when_none_finished(tracking_uri):
    # the failed trials reported the best accuracy before they failed: never a result
    result = recorded_sweep(tracking_uri, "nonefinished",
                            [("FAILED", 0.99, 0.1), ("KILLED", 0.95, 0.1), ("FAILED", 0.97, 0.2)])
    expected = (r"^no finished trial of sweep 'nonefinished' reported val_accuracy \(3 trials: 2 failed, 1 killed\); "
                r"the first failure: diverged: the loss is nan$")
    with pytest.raises(RuntimeError, match=expected):
        result.best()
    with pytest.raises(RuntimeError, match=expected):
        result.pareto()


def test_best_and_pareto_pass_over_failed_and_stopped_trials(tracking_uri):
    result = recorded_sweep(tracking_uri, "somefinished", [("FAILED", 0.99, 0.1), ("KILLED", 0.98, 0.1),
                                                           ("FINISHED", 0.9, 0.2), ("FINISHED", 0.8, 0.3)])
    best = result.best()
    assert best["trial_id"] == "t2" and best["metrics"]["val_accuracy"] == 0.9
    assert list(result.pareto()["trial_id"]) == ["t2"]  # t3 is dominated; t0 and t1 did not finish
