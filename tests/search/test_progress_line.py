"""The driver's progress line, fed reports as Tune feeds it: its "best" is the best report so far in
the objective's direction and never goes down; a resumed sweep's clock counts from the resume, and
what the restored trials reported before it still counts."""

from types import SimpleNamespace

import cloudpickle

from raysparse.search.progress import ProgressView
from raysparse.search.spaces import load_sweep
from tests.search.conftest import tiny_sweep


def trial(trial_id, status="RUNNING", last_result=None, metric_analysis=None):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last_result or {},
                           metric_analysis=metric_analysis or {}, is_finished=lambda: status == "TERMINATED")


def feed(view, trials, reports):
    """Each ``(trial, {metric: value, "epoch": n})`` as Tune reports it; the line printed after each."""
    for reporting, result in reports:
        view.on_trial_result(0, trials, reporting, result)


def best_of_lines(out, metric):
    return [line.split(f"best {metric} ")[1] for line in out.splitlines()]


def test_best_is_the_best_report_so_far_and_never_goes_down(capsys):
    view = ProgressView(load_sweep(tiny_sweep("progress-max")), every_seconds=0)
    t1, t2 = trial("t1"), trial("t2")
    feed(view, [t1, t2], [
        (t1, {"val_accuracy": 0.5, "epoch": 1}),
        (t1, {"val_accuracy": 0.8, "epoch": 2}),
        (t2, {"val_accuracy": 0.7, "epoch": 1}),
        (t1, {"val_accuracy": 0.6, "epoch": 3}),  # worse later (overfitting, or ASHA about to stop it)
        (t1, {"val_accuracy": 0.55, "epoch": 2}),  # a retry repeating epoch 2 from its checkpoint
        (t2, {"val_accuracy": float("nan"), "epoch": 2}),  # diverged: no best
    ])
    t1.status = "TERMINATED"  # ASHA stopped it: its reports still count
    view.on_trial_complete(0, [t1, t2], t1)
    assert best_of_lines(capsys.readouterr().out, "val_accuracy") == \
        ["0.5000 (t1)"] + ["0.8000 (t1)"] * 6
    assert view.best() == ("t1", 0.8)


def test_a_min_objective_keeps_its_lowest_report(capsys):
    view = ProgressView(load_sweep(tiny_sweep("progress-min", objectives={"val_loss": "min"})), every_seconds=0)
    t1, t2 = trial("t1"), trial("t2")
    feed(view, [t1, t2], [
        (t1, {"val_loss": 0.9, "epoch": 1}),
        (t2, {"val_loss": 0.4, "epoch": 1}),
        (t1, {"val_loss": 0.5, "epoch": 2}),
        (t2, {"val_loss": 0.7, "epoch": 2}),
        (t1, {"val_loss": float("inf"), "epoch": 3}),
    ])
    assert best_of_lines(capsys.readouterr().out, "val_loss") == ["0.9000 (t1)"] + ["0.4000 (t2)"] * 4


def test_a_resumed_view_counts_from_the_resume_and_keeps_the_restored_trials_reports(capsys):
    sweep = load_sweep(tiny_sweep("progress-resume"))  # 3 epochs a trial
    first = ProgressView(sweep, every_seconds=0)
    first.started -= 5000  # a driver that ran for a while before it was stopped
    # Tune pickles its callbacks into tuner.pkl; a resumed driver unpickles them, then starts the experiment
    resumed = cloudpickle.loads(cloudpickle.dumps(first))
    resumed.setup(num_samples=4)
    done = trial("t1", "TERMINATED", last_result={"epoch": 3, "val_accuracy": 0.9},
                 metric_analysis={"val_accuracy": {"max": 0.93, "min": 0.4, "last": 0.9}})
    running = trial("t2", metric_analysis={"val_accuracy": {"max": 0.6, "min": 0.5, "last": 0.6}})
    feed(resumed, [done, running], [(running, {"val_accuracy": 0.7, "epoch": 2})])
    line = capsys.readouterr().out.strip()
    elapsed = int(line.split("s]")[0].strip("[ "))
    assert elapsed < 60, line  # from the resume, not the stopped driver's 5000 s
    assert "1 finished, 0 stopped early" in line and line.endswith("best val_accuracy 0.9300 (t1)"), line

