"""Tune callbacks: a live progress view, and closing the MLflow runs of trials Tune ended."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import cloudpickle
import ray.exceptions
from ray.tune import Callback

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.report import stage_line
from raysparse.search import disk_watch
from raysparse.search.server_watch import server_lost
from raysparse.search.spaces import grid_points
from raysparse.search.trial import failure_reason, is_retryable, run_name_for
from raysparse.tracking import SweepRun


class ProgressView(Callback):
    """One status line: trials running / finished / stopped early / failed, and the best so far;
    at most every ``every_seconds`` (overwritten in place on a terminal), and at each failure.

    "best" is the best value of the sweep's first objective in any report so far, in its direction:
    it never goes down when a trial reports worse later, ASHA stops one, or a retry repeats
    epochs. After a resume it starts from what the restored trials reported before (Tune keeps
    each trial's best of every metric), and the clock counts from the resume, as the summary's."""

    def __init__(self, sweep, *, enabled: bool = True, every_seconds: float = 5.0):
        self.sweep, self.enabled, self.every = sweep, enabled, every_seconds
        self.epochs = sweep.base.get("epochs", 30)
        self.last_epoch: dict[str, int] = {}
        self.errors: set[str] = set()
        self._best: tuple[str, float] | None = None
        self._start_clock()

    def _start_clock(self) -> None:
        # process-local: Tune pickles its callbacks into tuner.pkl, and a resumed driver (another
        # process, perhaps another machine or terminal) gets them back from there
        self.started, self._printed, self._tty = time.monotonic(), 0.0, sys.stdout.isatty()
        self._restored_seen = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_clock()

    def setup(self, **info):
        """Tune calls it as the experiment starts, and again as a resumed one starts."""
        self._start_clock()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._remember_restored(trials)
        self._consider(trial.trial_id, result.get(self.sweep.metric))
        self.last_epoch[trial.trial_id] = result.get("epoch", 0)
        if time.monotonic() - self._printed >= self.every:
            self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # not a line per trial: a thousand short trials would print a thousand; the last one shows
        last = len(trials) >= self.sweep.num_samples and all(t.is_finished() for t in trials if t is not trial)
        if last or time.monotonic() - self._printed >= self.every:
            self._show(trials, force=last)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.errors.add(trial.trial_id)
        self._show(trials, force=True)

    def best(self) -> tuple[str, float] | None:
        """``(trial_id, value)`` of the best report so far, or None before any."""
        return self._best

    def _consider(self, trial_id: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return  # a diverged trial's NaN is no best
        if self._best is None or (value > self._best[1] if self.sweep.mode == "max" else value < self._best[1]):
            self._best = (trial_id, float(value))

    def _remember_restored(self, trials) -> None:
        """Once a (resumed) experiment runs: the best each trial reported before, as Tune keeps it."""
        if self._restored_seen:
            return
        self._restored_seen = True
        for trial in trials:
            analysis = (getattr(trial, "metric_analysis", None) or {}).get(self.sweep.metric, {})
            self._consider(trial.trial_id, analysis.get(self.sweep.mode))

    def _show(self, trials, force: bool = False) -> None:
        if not self.enabled:
            return
        self._remember_restored(trials)
        self._printed = time.monotonic()
        running = sum(t.status == "RUNNING" for t in trials)
        paused = sum(t.status == "PAUSED" for t in trials)  # PBT: waiting for their turn, or to copy another
        paused_text = f"{paused} paused, " if paused else ""
        done = [t for t in trials if t.status == "TERMINATED"]
        finished = sum(self._epochs_of(t) >= self.epochs for t in done)
        best = self.best()
        best_text = f"best {self.sweep.metric} {best[1]:.4f} ({best[0]})" if best else "best: -"
        line = (
            f"[{time.monotonic() - self.started:6.0f}s] trials {len(trials)}/{self.sweep.num_samples}: "
            f"{running} running, {paused_text}{finished} finished, {len(done) - finished} stopped early, "
            f"{len(self.errors)} failed | {best_text}"
        )
        if self._tty and not force:
            print(f"\r{line}", end="", flush=True)
        else:
            print(f"\r{line}" if self._tty else line, flush=True)

    def _epochs_of(self, trial) -> int:
        # a trial that ended before a resume reports nothing after it: its last result, restored by Tune
        restored = (getattr(trial, "last_result", None) or {}).get("epoch", 0)
        return self.last_epoch.get(trial.trial_id, restored)

    def summary(self, result) -> None:
        if self.enabled:
            statuses = result.to_dataframe()["status"].value_counts().to_dict()
            counts = ", ".join(f"{statuses.get(s, 0)} {word}" for s, word in
                               (("FINISHED", "finished"), ("KILLED", "stopped early"), ("FAILED", "failed")))
            took = f"{result.seconds:.0f}s"
            outcome = f"failed in {took}, every trial failed" if result.every_trial_failed() else f"done in {took}"
            print(f"sweep {self.sweep.name!r} {outcome}: {counts}", flush=True)
            if result.stage() is not None:
                objectives = [(f"metrics.{m}", mode) for m, mode in self.sweep.objectives]
                print(stage_line(result.stage(), objectives), flush=True)


PROCESS_DIED = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
FINAL_UPLOAD_TIMEOUT_S = 600.0  # a large model's state_dict and program, through MLflow's retries


class TrialRunCloser(Callback):
    """A trial that ASHA stops or that crashes is killed mid-run and cannot close its own MLflow
    run; the driver does it, so no child run is left RUNNING, and a trial that failed before it
    opened a run gets one, FAILED with its reason. A failure that a retry cannot change (a bad
    config, a divergence) is not retried. With the MLflow server lost it writes nothing (each
    call would wait out its retries): the runs stay open for ``--resume``."""

    def __init__(self, parent: SweepRun, sweep, storage: Path):
        self.parent, self.sweep, self.storage = parent, sweep, storage
        # fewer when a grid has fewer points than num_samples
        self.total_trials = sweep.num_samples if sweep.sampler != "grid" else \
            min(sweep.num_samples, len(grid_points(sweep.space, sweep.base)))

    def on_trial_start(self, iteration, trials, trial, **info):
        try:  # a combination of sampled values that no single value showed to be bad
            load_config(self.sweep.trial_config(trial.config))
        except ConfigError:
            trial.max_failures = 0  # it fails at once in the trial, with its run; no retry

    def _stopping(self) -> bool:
        """The server is lost or a disk full: the driver stops the sweep and closes what it can."""
        return server_lost(self.sweep.name) is not None or disk_watch.disk_full() is not None

    def on_trial_recover(self, iteration, trials, trial, **info):
        error = _trial_error(trial)
        if error is not None and disk_watch.report_error_text(str(error), self.storage):
            return  # a retry would fail as well: the sweep stops at Tune's next step
        self._close_uploads_of_a_dead_process(trial, error)
        if error is not None and not is_retryable(error):
            # Tune requeued it already: that attempt finds the recorded reason and fails at once
            trial.max_failures = trial.run_metadata.num_failures

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self._stopping():
            # no-op when the trial finished itself, or returned and its process uploads the rest
            self.parent.close_trial(trial.trial_id, "KILLED", leave_uploading=True)
            self._wait_for_uploads_after_the_last(trials, trial)

    def _wait_for_uploads_after_the_last(self, trials, trial) -> None:
        """After the last trial, before Tune stops the trials' processes (it kills those that
        take over 5 s): every final upload is in MLflow when the sweep returns."""
        others_done = all(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
        if others_done and len(trials) >= self.total_trials:
            self.parent.wait_for_final_uploads(FINAL_UPLOAD_TIMEOUT_S)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _trial_error(trial)
        if error is not None:
            disk_watch.report_error_text(str(error), self.storage)
        if self._stopping():
            return
        self._close_uploads_of_a_dead_process(trial, _trial_error(trial))
        self._close_failed(trial)
        self._wait_for_uploads_after_the_last(trials, trial)

    def _close_uploads_of_a_dead_process(self, trial, error: BaseException | None) -> None:
        """Its process died: what it still uploaded of an earlier trial is lost, and said so."""
        if server_lost(self.sweep.name) is not None or not isinstance(error, PROCESS_DIED):
            return
        reason = "its process died before it uploaded the trial's final masks, model and plots"
        for trial_id in self.parent.close_uploads_of(trial.trial_id, reason=reason):
            print(f"raysparse: trial {trial_id}: {reason}; its run is FAILED", file=sys.stderr)

    def _close_failed(self, trial) -> None:
        error = _trial_error(trial)
        where = f" (traceback: {trial.error_file})" if getattr(trial, "error_file", None) else ""
        reason = (failure_reason(error) if error is not None else "the trial raised an error") + where
        if self.parent.close_trial(trial.trial_id, "FAILED", reason=reason):
            return
        if not self.parent.has_trial_run(trial.trial_id):
            config = self.sweep.trial_config(trial.config)
            self.parent.record_failed_trial(trial.trial_id, run_name=run_name_for(trial.trial_id, config),
                                            params=config, reason=reason)

    def on_experiment_end(self, trials, **info):
        if self._stopping():
            return
        for trial_id in self.parent.wait_for_final_uploads(0):  # their processes stopped first
            reason = "its process stopped before it uploaded the trial's final masks, model and plots"
            self.parent.close_trial(trial_id, "FAILED", reason=reason)
            print(f"raysparse: trial {trial_id}: {reason}; its run is FAILED", file=sys.stderr)
        discarded, kept = self.parent.discard_unknown(
            {t.trial_id for t in trials}, reason="its trial was lost with the stopped driver (it started after "
            "Tune's last snapshot); the resumed sweep ran another trial in its place")
        for run_id in discarded:
            print(f"raysparse: run {run_id} of a trial lost with the stopped driver is in MLflow's deleted runs "
                  f"(mlflow runs restore --run-id {run_id})", file=sys.stderr)
        for run_id in kept:
            print(f"raysparse: run {run_id} finished after the stopped driver's last snapshot: it stays FINISHED, "
                  f"and the resumed sweep ran another trial in its place", file=sys.stderr)


def _trial_error(trial) -> BaseException | None:
    """The exception the trial's last attempt raised, unwrapped from Ray's task error."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not Path(path).is_file():
        return None
    try:
        error = cloudpickle.loads(Path(path).read_bytes())
    except Exception:  # an exception that does not unpickle here (a class only the worker has)
        return None
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    return error
