"""MLflow runs of a sweep: one parent run per sweep (driver), one child run per trial (rank 0).

Only ``MlflowClient`` is used, never the fluent ``mlflow.start_run`` API: its active run is
process-global state, so two trials (or threads) in one process would log into each other.

Naming, shared with the report side:
- params: the config flattened with dots (``sparsity.final_sparsity``), values ``str()``-ed,
  cut at MLflow's 6000 characters with a ``...[truncated]`` marker;
- metrics: nested dicts flattened the same way (``layer_density.layer1.0.conv1``); characters
  MLflow rejects in names (anything but letters, digits, ``_ - . space``) become ``_``;
- a trial's run carries ``raysparse.trial_id``: that tag, under the sweep's parent run, is how a
  retried trial finds and continues its run instead of creating a second one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import numbers
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException

from raysparse.errors import ConfigError, unknown_choice
from raysparse.sparsity.masks import MaskEvent, unpack_masks

ROLE_TAG, SWEEP_TAG, TRIAL_TAG = "raysparse.role", "raysparse.sweep", "raysparse.trial_id"
FAILURE_TAG, PARENT_TAG = "raysparse.failure_reason", "mlflow.parentRunId"
_MAX_PARAM_LENGTH, _TRUNCATED = 6000, "...[truncated]"
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
_MAX_REASON_LENGTH = 8000  # MLflow's tag value limit
LINEAGE = "masks/lineage.jsonl"


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"sparsity": {"final_sparsity": 0.9}}`` -> ``{"sparsity.final_sparsity": "0.9"}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{prefix}{key}."))
            continue
        text = str(value)
        if len(text) > _MAX_PARAM_LENGTH:  # MLflow would reject the whole batch
            text = text[: _MAX_PARAM_LENGTH - len(_TRUNCATED)] + _TRUNCATED
        flat[f"{prefix}{key}"] = text
    return flat


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numbers, nested dicts of numbers -> dotted metric names; anything else is a TypeError."""
    flat = {}
    for key, value in metrics.items():
        name = prefix + re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(key))
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (numbers.Real, np.bool_)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
            if name in flat:
                raise ValueError(f"metric names {key!r} and another key both become {name!r}")
            flat[name] = float(value)
        else:
            raise TypeError(f"metric {prefix + str(key)!r} is a {type(value).__name__} ({value!r:.60}); only numbers "
                            "or dicts of numbers can be logged")
    return flat


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
        _log_params(client, run.info.run_id, flatten_params(params))
        if sweep_text is not None:
            client.log_text(run.info.run_id, sweep_text, "sweep.yaml")
        return cls(tracking_uri, experiment_id, experiment_name, run.info.run_id)

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

    def close_trial(self, trial_id: str, status: str, *, reason: str | None = None) -> bool:
        """End a trial's run that is still RUNNING (its process was killed, so it cannot): set
        ``status`` (KILLED, FAILED) and ``reason`` as its failure reason; False if none was running."""
        closed = False
        for run in _children(self._client, self.experiment_id, self.run_id, trial_id):
            if run.info.status == "RUNNING":
                if reason is not None:
                    self._client.set_tag(run.info.run_id, FAILURE_TAG, reason[:_MAX_REASON_LENGTH])
                self._client.set_terminated(run.info.run_id, status)
                closed = True
        return closed

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status)


class TrialRun:
    """A trial's child run, written from the trial process (rank 0 only)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self._client, self.run_id = client, run_id
        # the full lineage lives here and is re-uploaded whole: artifacts cannot be appended to
        self._workdir = tempfile.TemporaryDirectory(prefix="raysparse-trial-")
        self._lineage = Path(self._workdir.name) / LINEAGE
        self._lineage.parent.mkdir(parents=True)

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, *,
             run_name: str, params: dict) -> TrialRun:
        """Continue this trial's run under the parent if one exists (a retry), else create it."""
        client = MlflowClient(tracking_uri)
        params = flatten_params(params)
        existing = _children(client, experiment_id, parent_run_id, trial_id)
        if existing:
            run = existing[0]
            client.update_run(run.info.run_id, status="RUNNING")
            if FAILURE_TAG in run.data.tags:  # the earlier failure no longer describes this run
                client.delete_tag(run.info.run_id, FAILURE_TAG)
            params = {k: v for k, v in params.items() if k not in run.data.params}  # params are write-once
        else:
            tags = {PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"}
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        trial = cls(client, run.info.run_id)
        _log_params(client, trial.run_id, params)
        if existing and any(f.path == LINEAGE for f in client.list_artifacts(trial.run_id, "masks")):
            # keep the rows logged before the retry: later uploads overwrite the artifact whole
            Path(client.download_artifacts(trial.run_id, LINEAGE, trial._workdir.name)).replace(trial._lineage)
        return trial

    def log_epoch(self, metrics: dict, step: int) -> None:
        """All numbers of one epoch at ``step`` in one request; a non-number raises TypeError first."""
        _log_metrics(self._client, self.run_id, flatten_metrics(metrics), step)

    def log_mask_events(self, events: list[MaskEvent]) -> None:
        """Each event's packed masks as ``masks/step_<step>_<hash>.bin`` plus a row in the lineage."""
        if not events:
            return
        upload = Path(self._workdir.name) / "upload"
        upload.mkdir(exist_ok=True)
        for event in events:
            name = f"step_{event.step:08d}_{event.hash[:12]}.bin"
            (upload / name).write_bytes(event.packed)
            self._client.log_artifact(self.run_id, str(upload / name), "masks")
            (upload / name).unlink()
            row = {"step": event.step, "reason": event.reason, "density": event.density, "churn": event.churn,
                   "hash": event.hash, "parent_hash": event.parent_hash, "file": f"masks/{name}"}
            with open(self._lineage, "a") as lineage:
                lineage.write(json.dumps(row) + "\n")
        self._client.log_artifact(self.run_id, str(self._lineage), "masks")

    def log_final(self, *, packed_masks: bytes, layer_density: dict[str, float], model_state: dict,
                  config: dict) -> None:
        """Final masks, per-layer density table, state_dict (weights_only-loadable) and config."""
        out = Path(self._workdir.name) / "final"
        (out / "masks").mkdir(parents=True, exist_ok=True)
        (out / "model").mkdir(exist_ok=True)
        (out / "masks" / "final.bin").write_bytes(packed_masks)
        masks = unpack_masks(packed_masks)
        with open(out / "layer_density.csv", "w", newline="") as table:
            writer = csv.writer(table)
            writer.writerow(["layer", "density", "kept", "total"])
            for layer, density in layer_density.items():
                mask = masks.get(layer)
                writer.writerow([layer, density, *((int(mask.sum()), mask.numel()) if mask is not None else ("", ""))])
        state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model_state.items()}
        torch.save(state, out / "model" / "state_dict.pt")
        (out / "model" / "config.json").write_text(json.dumps(config, indent=2, default=str))
        self._client.log_artifacts(self.run_id, str(out))
        shutil.rmtree(out)

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status)
        self._workdir.cleanup()

    def fail(self, reason: str) -> None:
        """Mark the run FAILED with ``reason`` in the ``raysparse.failure_reason`` tag."""
        self._client.set_tag(self.run_id, FAILURE_TAG, reason[:_MAX_REASON_LENGTH])
        self.finish("FAILED")

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(f"{exc_type.__name__}: {exc}")


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as error:  # another driver created it in between
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])


def _log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, int(step)) for k, v in metrics.items()]
    for start in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start : start + _METRICS_PER_BATCH])


def _search(client: MlflowClient, experiment_id: str, query: str, order_by: str = "attributes.start_time ASC",
            limit: int | None = None) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=limit or 1000, order_by=[order_by],
                                  page_token=token)
        runs += page
        token = page.token
        if not token or limit:
            return runs


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str | None = None) -> list[Run]:
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if trial_id is not None:
        query += f" and tags.`{TRIAL_TAG}` = '{_quotable(trial_id)}'"
    return _search(client, experiment_id, query)


def _quotable(value: str) -> str:
    if "'" in value:
        raise ValueError(f"{value!r}: a quote cannot be searched for in an MLflow filter")
    return value


@dataclass
class SweepData:
    """A sweep's parent run and one row per trial: ``run_id, trial_id, run_name, status,
    start_time, end_time, failure_reason``, then ``params.<dotted>`` (numeric where every value
    parses as a number) and ``metrics.<name>`` holding each metric's last-step value."""

    experiment_id: str
    experiment_name: str
    sweep_name: str
    parent_run_id: str
    parent_status: str
    params: dict[str, str]
    trials: pd.DataFrame


def load_sweep(tracking_uri: str, experiment_name: str, sweep_name: str | None = None) -> SweepData:
    """The latest run of ``sweep_name`` (or of any sweep) in the experiment, with its trials."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise _not_found("experiment", experiment_name, [e.name for e in client.search_experiments()])
    query = f"tags.`{ROLE_TAG}` = 'sweep'"
    if sweep_name is not None:
        query += f" and tags.`{SWEEP_TAG}` = '{_quotable(sweep_name)}'"
    found = _search(client, experiment.experiment_id, query, "attributes.start_time DESC", limit=1)
    if not found:
        every_sweep = _search(client, experiment.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'")
        raise _not_found(f"sweep (experiment {experiment_name!r})", sweep_name,
                         {r.data.tags.get(SWEEP_TAG) for r in every_sweep})
    parent = found[0]
    rows = [_trial_row(run) for run in _children(client, experiment.experiment_id, parent.info.run_id)]
    base = ["run_id", "trial_id", "run_name", "status", "start_time", "end_time", "failure_reason"]
    extra = {key for row in rows for key in row if key not in base}
    columns = base + sorted(extra, key=lambda k: (k.startswith("metrics."), k))  # params first, then metrics
    trials = pd.DataFrame(rows, columns=columns)
    for column in columns:
        if column.startswith("params."):
            with contextlib.suppress(ValueError, TypeError):  # "None", "cosine", "[64, 32]" stay text
                trials[column] = pd.to_numeric(trials[column])
    return SweepData(experiment.experiment_id, experiment_name, parent.data.tags.get(SWEEP_TAG, ""),
                     parent.info.run_id, parent.info.status, dict(parent.data.params), trials)


def download_masks(tracking_uri: str, run_id: str, artifact: str = "masks/final.bin") -> dict[str, torch.Tensor]:
    """The masks stored in a run's artifact (``masks/final.bin`` or a lineage ``file``)."""
    with tempfile.TemporaryDirectory() as tmp:
        return unpack_masks(Path(MlflowClient(tracking_uri).download_artifacts(run_id, artifact, tmp)).read_bytes())


def download_lineage(tracking_uri: str, run_id: str) -> list[dict]:
    """The rows of a trial's ``masks/lineage.jsonl``, oldest first."""
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(MlflowClient(tracking_uri).download_artifacts(run_id, LINEAGE, tmp)).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def _trial_row(run: Run) -> dict:
    def time_of(ms):
        return pd.to_datetime(ms, unit="ms") if ms else pd.NaT

    return {
        "run_id": run.info.run_id, "trial_id": run.data.tags.get(TRIAL_TAG), "run_name": run.info.run_name,
        "status": run.info.status, "start_time": time_of(run.info.start_time), "end_time": time_of(run.info.end_time),
        "failure_reason": run.data.tags.get(FAILURE_TAG),
        **{f"params.{k}": v for k, v in run.data.params.items()},
        **{f"metrics.{k}": v for k, v in run.data.metrics.items()},  # search results hold the latest step
    }


def _not_found(kind: str, value: str | None, choices) -> ConfigError:
    choices = sorted(c for c in choices if c)
    if not choices:
        return ConfigError("name", f"unknown {kind} {value!r}; there is none yet")
    return unknown_choice("name", kind, value, choices)
