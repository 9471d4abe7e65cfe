"""A sweep's parent run, held by the driver, and its trials' child runs as the driver sees them."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysparse.errors import ConfigError, TrackingServerLost
from raysparse.tracking._client import (
    RUNNING,
    _children,
    _experiment_id,
    _log_metrics,
    _log_params,
    _set_failure_reason,
)
from raysparse.tracking.naming import (
    FAILURE_TAG,
    FINAL_UPLOAD_TAG,
    PARENT_TAG,
    PROCESS_TAG,
    ROLE_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    flatten_metrics,
    flatten_params,
    redact,
)


@dataclass(frozen=True)
class ChildRun:
    """A trial's run as the driver sees it."""

    run_id: str
    trial_id: str | None
    run_name: str
    status: str


@dataclass
class SweepRun:
    """The parent run of one sweep, held by the driver."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    run_id: str
    _client: MlflowClient = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._client = MlflowClient(self.tracking_uri)

    @classmethod
    def start(cls, tracking_uri: str, experiment_name: str, sweep_name: str, *, params: dict,
              sweep_text: str | None = None) -> SweepRun:
        """Create the parent run (in a new or existing experiment), log params and the sweep file."""
        client = MlflowClient(tracking_uri)
        experiment_id = _experiment_id(client, experiment_name)
        run = client.create_run(experiment_id, run_name=sweep_name, tags={ROLE_TAG: "sweep", SWEEP_TAG: sweep_name})
        sweep_run = cls(tracking_uri, experiment_id, experiment_name, run.info.run_id)
        with sweep_run.closed_on_error(stopped="stopped while the sweep started", failed="the sweep did not start"):
            _log_params(client, run.info.run_id, flatten_params(params))
            if sweep_text is not None:
                client.log_text(run.info.run_id, redact(sweep_text), "sweep.yaml")
        return sweep_run

    @classmethod
    def attach(cls, tracking_uri: str, experiment_name: str, run_id: str, *, resume: bool = False) -> SweepRun:
        """Reopen an existing sweep run: to add artifacts (a report) or, with ``resume``, to
        continue the sweep, which marks the run RUNNING again until ``finish``."""
        client = MlflowClient(tracking_uri)
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise ConfigError("run_id", f"no MLflow run {run_id!r} at {tracking_uri} ({error.message})") from error
        actual = client.get_experiment(run.info.experiment_id).name
        if actual != experiment_name or run.data.tags.get(ROLE_TAG) != "sweep":
            raise ConfigError("run_id", f"run {run_id!r} is not a sweep run of experiment {experiment_name!r}")
        if resume:
            client.update_run(run_id, status="RUNNING")
            if FAILURE_TAG in run.data.tags:  # why its driver stopped last time: no longer so
                client.delete_tag(run_id, FAILURE_TAG)
        return cls(tracking_uri, run.info.experiment_id, experiment_name, run_id)

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """Numbers (or dicts of numbers) on the parent run, e.g. the sweep's best objective."""
        _log_metrics(self._client, self.run_id, flatten_metrics(metrics), step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def child_runs(self) -> list[ChildRun]:
        """The trials' runs, oldest first."""
        return [
            ChildRun(r.info.run_id, r.data.tags.get(TRIAL_TAG), r.info.run_name, r.info.status)
            for r in _children(self._client, self.experiment_id, self.run_id)
        ]

    def close_trial(self, trial_id: str, status: str, *, reason: str | None = None,
                    leave_uploading: bool = False) -> bool:
        """End a trial's run that is still RUNNING (its process was killed, so it cannot): set
        ``status`` (KILLED, FAILED) and ``reason`` as its failure reason; False if none was running.
        ``leave_uploading``: not a run whose trial returned and whose process uploads its final
        artifacts (it ends itself)."""
        closed = False
        for run in _children(self._client, self.experiment_id, self.run_id, trial_id):
            if leave_uploading and FINAL_UPLOAD_TAG in run.data.tags:
                continue
            if run.info.status == "RUNNING":
                if reason is not None:
                    _set_failure_reason(self._client, run.info.run_id, reason)
                self._client.set_terminated(run.info.run_id, status)
                closed = True
        return closed

    def has_trial_run(self, trial_id: str) -> bool:
        return bool(_children(self._client, self.experiment_id, self.run_id, trial_id))

    def record_failed_trial(self, trial_id: str, *, run_name: str, params: dict, reason: str) -> str:
        """A FAILED child run for a trial that failed before it could open its own (its process died
        at start-up, or it failed before MLflow was reached): every trial Tune started has a run."""
        tags = {PARENT_TAG: self.run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"}
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        _log_params(self._client, run.info.run_id, flatten_params(params))
        _set_failure_reason(self._client, run.info.run_id, reason)
        self._client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id

    def wait_for_final_uploads(self, timeout: float, poll: float = 0.1) -> list[str]:
        """Wait until no trial run is RUNNING while its process uploads its final artifacts;
        the trial ids still uploading after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            found = _children(self._client, self.experiment_id, self.run_id,
                              where=f"{RUNNING} and tags.`{FINAL_UPLOAD_TAG}` IS NOT NULL")
            uploading = [r.data.tags.get(TRIAL_TAG) for r in found
                         if r.info.status == "RUNNING" and FINAL_UPLOAD_TAG in r.data.tags]
            if not uploading or time.monotonic() >= deadline:
                return uploading
            time.sleep(poll)

    def close_uploads_of(self, trial_id: str, *, reason: str) -> list[str]:
        """The trial's process died: end FAILED, with ``reason``, the runs of earlier trials whose
        final artifacts it was still uploading; their trial ids."""
        own = _children(self._client, self.experiment_id, self.run_id, trial_id)
        process = own[0].data.tags.get(PROCESS_TAG) if own else None
        if process is None:
            return []
        left = [r for r in _children(self._client, self.experiment_id, self.run_id, where=RUNNING)
                if r.info.status == "RUNNING" and r.data.tags.get(FINAL_UPLOAD_TAG) == process]
        for run in left:
            _set_failure_reason(self._client, run.info.run_id, reason)
            self._client.set_terminated(run.info.run_id, "FAILED")
        return [r.data.tags.get(TRIAL_TAG) for r in left]

    def close_running(self, status: str, *, reason: str) -> list[str]:
        """End every trial run still RUNNING (a sweep stopped midway: its trials cannot)."""
        left = [r.data.tags.get(TRIAL_TAG) for r in _children(self._client, self.experiment_id, self.run_id,
                                                              where=RUNNING) if r.info.status == "RUNNING"]
        for trial_id in left:
            self.close_trial(trial_id, status, reason=reason)
        return left

    def discard_unknown(self, known_trial_ids: set[str], *, reason: str) -> tuple[list[str], list[str]]:
        """Move unfinished child runs of trials Tune does not know to MLflow's deleted runs, with
        ``reason`` as their failure reason. Such a run belongs to a trial that started less than a
        snapshot interval before a driver died: the resumed sweep has no such trial (it ran another
        in its place), so its run would be one run too many. Deleted runs stay in the store
        (``mlflow runs restore --run-id ...``). A FINISHED run is a trained trial: never deleted.
        Returns the deleted runs' ids and the FINISHED ones kept."""
        unknown = [c for c in self.child_runs() if c.trial_id not in known_trial_ids]
        discarded = [c for c in unknown if c.status != "FINISHED"]
        for child in discarded:
            _set_failure_reason(self._client, child.run_id, reason)
            if child.status == "RUNNING":
                self._client.set_terminated(child.run_id, "KILLED")
            self._client.delete_run(child.run_id)
        return [c.run_id for c in discarded], [c.run_id for c in unknown if c.status == "FINISHED"]

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status)

    @contextmanager
    def closed_on_error(self, *, stopped: str, failed: str):
        """Whatever raises inside leaves the run closed: KILLED with ``stopped`` as its reason on
        Ctrl-C / SIGTERM, else FAILED with the error and ``failed`` (what to do next). A run that
        is already closed keeps its status and gains the reason; a FINISHED one is left as it is."""
        try:
            yield self
        except (KeyboardInterrupt, SystemExit):
            self._close_after_error("KILLED", stopped)
            raise
        except TrackingServerLost:  # nothing can reach the run: it stays open, and --resume continues it
            raise
        except BaseException as error:
            described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self._close_after_error("FAILED", f"the sweep's driver failed: {described}; {failed}")
            raise

    def _close_after_error(self, status: str, reason: str) -> None:
        try:
            current = self._client.get_run(self.run_id).info.status
            if current == "FINISHED":
                return
            _set_failure_reason(self._client, self.run_id, reason)
            if current == "RUNNING":
                self._client.set_terminated(self.run_id, status)
        except Exception as error:  # the server is gone too: say so, and let the first error through
            print(f"raysparse: the sweep's MLflow run {self.run_id} could not be closed ({type(error).__name__}: "
                  f"{redact(str(error))}); it may show RUNNING", file=sys.stderr)
