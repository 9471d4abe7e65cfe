"""What a sweep returns: its trials as MLflow recorded them (the one source of truth, the same
table ``raysparse report`` reads later), the best trial and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raysparse.report import finished, pareto_front, rank_trials
from raysparse.search.spaces import Sweep
from raysparse.tracking import SweepData, load_sweep


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

    def best(self) -> dict:
        """The best finished trial on the first objective (or the best of all when none finished):
        its metrics and the config it trained."""
        trials = self.to_dataframe()
        done = finished(trials)
        ranked = rank_trials(done if len(done) else trials, objective_columns(self.sweep.objectives))
        column = f"metrics.{self.sweep.metric}"
        if ranked.empty or column not in ranked or ranked[column].isna().all():
            raise RuntimeError(self._why_no_best(trials))
        row = ranked.iloc[0]
        params = {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.") and pd.notna(v)}
        metrics = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.") and pd.notna(v)}
        return {
            "trial_id": row["trial_id"], "run_id": row["run_id"], "metrics": metrics,
            "config": self._trial_config(row["trial_id"]), "params": params,
        }

    def _why_no_best(self, trials: pd.DataFrame) -> str:
        if trials.empty:
            return f"sweep {self.sweep.name!r} has no trials"
        counts = ", ".join(f"{n} {status.lower()}" for status, n in trials["status"].value_counts().items())
        text = f"no trial of sweep {self.sweep.name!r} reported {self.sweep.metric} ({len(trials)} trials: {counts})"
        reasons = trials["failure_reason"].dropna() if "failure_reason" in trials else []
        return text + (f"; the first failure: {reasons.iloc[0]}" if len(reasons) else "")

    def _trial_config(self, trial_id: str) -> dict | None:
        """The exact config the trial trained (its sampled values put into the base config)."""
        for result in self.grid:
            if result.metrics and result.metrics.get("trial_id") == trial_id:
                return self.sweep.trial_config(result.config)
        return None

    def pareto(self) -> pd.DataFrame:
        return pareto_front(self.to_dataframe(), objective_columns(self.sweep.objectives))

    @property
    def errors(self) -> list[str]:
        return [str(r.error) for r in self.grid if r.error is not None]
