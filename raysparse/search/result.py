"""What a sweep returns: its trials as MLflow recorded them (the one source of truth, the same
table ``raysparse report`` reads later), the best trial and the Pareto front."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from raysparse.report import finished, pareto_front, rank_trials
from raysparse.search.spaces import Sweep
from raysparse.tracking import SweepData, download_exploits, load_sweep, run_params


def typed_param(text: str):
    """A param as MLflow holds it (``str()`` of the value) back as the value: ``'True'`` -> True,
    ``'[256, 128]'`` -> [256, 128], ``'None'`` -> None; names and paths stay text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _as_lists(value)


def _as_lists(value):
    """Config tuples (``betas``) are lists in a config file: the same value reads the same."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def objective_columns(objectives) -> list[tuple[str, str]]:
    return [(f"metrics.{metric}", mode) for metric, mode in objectives]


class SweepResult:
    def __init__(self, sweep: Sweep, grid, tracking_uri: str, experiment_name: str, parent_run_id: str,
                 seconds: float):
        self.sweep, self.grid, self.seconds = sweep, grid, seconds
        self.tracking_uri, self.experiment_name, self.parent_run_id = tracking_uri, experiment_name, parent_run_id
        self._data: SweepData | None = None
        self.report: dict[str, Path] | None = None  # the files ``report_sweep`` wrote at the end

    def to_dataframe(self) -> pd.DataFrame:
        """One row per trial: run and trial ids, status, ``params.*`` and final ``metrics.*``."""
        return self.data().trials

    def data(self) -> SweepData:
        """The sweep as MLflow recorded it (read once)."""
        if self._data is None:
            data = load_sweep(self.tracking_uri, self.experiment_name, self.sweep.name)
            if data.parent_run_id != self.parent_run_id:  # a newer run of the same sweep name
                raise RuntimeError(f"sweep run {self.parent_run_id} is no longer the latest of {self.sweep.name!r}")
            self._data = data
        return self._data

    @property
    def pretrain_epochs(self) -> int:
        """Epochs of the sweep's dense stage (``pretrain:``), trained once for all trials; 0 without one."""
        return self.sweep.pretrain_epochs

    def stage(self) -> dict | None:
        """The dense stage's run as recorded (``run_id``, ``status``, ``params.*``, ``metrics.*``),
        or None; it is not one of the trials."""
        return self.data().stage

    def best(self) -> dict:
        """The best finished trial on the first objective: its metrics and the config it trained.
        A failed or early-stopped trial is never chosen (its metrics are from an epoch it did not
        train past); with none finished this raises, saying how the trials ended. Under PBT,
        ``config`` and ``params`` are those it ended with and ``exploits`` says from which trial
        and epoch its weights and masks came, with the values it switched to (the epochs before
        came from that trial's own schedule)."""
        trials = self.to_dataframe()
        ranked = rank_trials(finished(trials), objective_columns(self.sweep.objectives))
        column = f"metrics.{self.sweep.metric}"
        if ranked.empty or column not in ranked or ranked[column].isna().all():
            raise RuntimeError(self._why_no_best(trials))
        row = ranked.iloc[0]
        params = {k: typed_param(v) for k, v in run_params(self.tracking_uri, row["run_id"]).items()}
        metrics = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.") and pd.notna(v)}
        best = {
            "trial_id": row["trial_id"], "run_id": row["run_id"], "metrics": metrics,
            "config": self._trial_config(row["trial_id"]), "params": params,
        }
        if self.sweep.early_stopping.pbt:  # its weights were trained under a schedule of configs
            best["exploits"] = download_exploits(self.tracking_uri, row["run_id"])
        return best

    def _why_no_best(self, trials: pd.DataFrame) -> str:
        if trials.empty:
            return f"sweep {self.sweep.name!r} has no trials"
        counts = ", ".join(f"{n} {status.lower()}" for status, n in trials["status"].value_counts().items())
        # "finished": a FAILED or KILLED trial may have reported the metric, at an epoch before its end
        text = (f"no finished trial of sweep {self.sweep.name!r} reported {self.sweep.metric} "
                f"({len(trials)} trials: {counts})")
        reasons = trials["failure_reason"].dropna() if "failure_reason" in trials else []
        return text + (f"; the first failure: {reasons.iloc[0]}" if len(reasons) else "")

    def _trial_config(self, trial_id: str) -> dict | None:
        """The exact config the trial trained (its sampled values put into the base config)."""
        for result in self.grid:
            if result.metrics and result.metrics.get("trial_id") == trial_id:
                return self.sweep.trial_config(result.config)
        return None

    def load_model(self, run=None, *, model=None):
        """A trial's final network (default: the best trial's), masks in its weights; see
        ``raysparse.load_model``. A sweep's Python model builds it again."""
        from raysparse import load_model

        return load_model(run if run is not None else self.best()["run_id"], tracking_uri=self.tracking_uri,
                          model=model if model is not None else self.sweep.objects.model)

    def every_trial_failed(self) -> bool:
        """True when the sweep has trials and none of them ended other than FAILED: nothing was
        found, which the CLI's exit status says (a partly failed sweep still found something)."""
        statuses = self.to_dataframe()["status"]
        return len(statuses) > 0 and bool((statuses == "FAILED").all())

    def pareto(self) -> pd.DataFrame:
        """The non-dominated finished trials; raises as ``best`` does when none finished."""
        trials = self.to_dataframe()
        if finished(trials).empty:
            raise RuntimeError(self._why_no_best(trials))
        return pareto_front(trials, objective_columns(self.sweep.objectives))

    @property
    def errors(self) -> list[str]:
        return [str(r.error) for r in self.grid if r.error is not None]
