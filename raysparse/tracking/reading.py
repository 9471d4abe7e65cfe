"""Reading a sweep back for reports: its parent run, one row per trial, a trial's masks and lineage."""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from raysparse.errors import ConfigError, unknown_choice
from raysparse.tracking._client import _children, _quotable, _search, _stage_runs
from raysparse.tracking.naming import (
    EXPLOITS,
    FAILURE_TAG,
    LINEAGE,
    PBT_EXPLOITS_TAG,
    PBT_PARAM_TAG,
    PRETRAIN,
    ROLE_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
)

if TYPE_CHECKING:
    import torch


@dataclass
class SweepData:
    """A sweep's parent run and one row per trial: ``run_id, trial_id, run_name, status,
    start_time, end_time, failure_reason``, then ``params.<dotted>`` (numeric where every value
    parses as a number; a PBT trial's the values it ended with, and ``pbt_exploits`` how many times
    it copied another trial) and ``metrics.<name>`` holding each metric's last-step value. ``stage``: the
    sweep's dense stage (``pretrain:``) as a row of the same shape, or None: it is not a trial."""

    experiment_id: str
    experiment_name: str
    sweep_name: str
    parent_run_id: str
    parent_status: str
    params: dict[str, str]
    trials: pd.DataFrame
    stage: dict | None = None


def load_sweep(tracking_uri: str, experiment_name: str, sweep_name: str | None = None) -> SweepData:
    """The latest run of ``sweep_name`` (or of any sweep) in the experiment, with its trials."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise _not_found("experiment", experiment_name, [e.name for e in client.search_experiments()])
    query = f"tags.`{ROLE_TAG}` = 'sweep'"
    if sweep_name is not None:
        query += f" and tags.`{SWEEP_TAG}` = '{_quotable(sweep_name, 'NAME')}'"
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
    stages = _stage_runs(client, experiment.experiment_id, parent.info.run_id, PRETRAIN)
    return SweepData(experiment.experiment_id, experiment_name, parent.data.tags.get(SWEEP_TAG, ""),
                     parent.info.run_id, parent.info.status, dict(parent.data.params), trials,
                     _trial_row(stages[0]) if stages else None)


def download_masks(tracking_uri: str, run_id: str, artifact: str = "masks/final.bin") -> dict[str, torch.Tensor]:
    """The masks stored in a run's artifact (``masks/final.bin`` or a full snapshot's lineage
    ``file``; a delta's masks: ``masks_at_step``)."""
    from raysparse.sparsity.lineage import DELTA, decode, encoding_of
    from raysparse.sparsity.masks import unpack_masks  # torch: not for reports

    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(MlflowClient(tracking_uri).download_artifacts(run_id, artifact, tmp)).read_bytes()
    try:
        encoding = encoding_of(blob)
        packed = decode(blob) if encoding != DELTA else b""  # checked: no header claims more weights than follow it
    except ValueError as err:
        raise ConfigError("artifact", f"{artifact} of run {run_id}: {err}") from None
    if encoding == DELTA:
        raise ConfigError("artifact", f"{artifact} of run {run_id} holds the changes against an earlier file; "
                          "rebuild its masks with raysparse.tracking.masks_at_step (raysparse masks RUN_ID --step N)")
    return unpack_masks(packed)


def download_json(tracking_uri: str, run_id: str, artifact: str):
    """A run's JSON artifact, parsed; None where the run has no such file."""
    client = MlflowClient(tracking_uri)
    parent = str(Path(artifact).parent) if "/" in artifact else None
    if not any(f.path == artifact for f in client.list_artifacts(run_id, parent)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, artifact, tmp)).read_text())


def layer_sizes_of(tracking_uri: str, run_id: str) -> dict[str, int]:
    """Weights per masked layer, from a finished trial's ``layer_density.csv``; {} without one."""
    client = MlflowClient(tracking_uri)
    if not any(f.path == "layer_density.csv" for f in client.list_artifacts(run_id)):
        return {}
    with tempfile.TemporaryDirectory() as tmp, open(client.download_artifacts(run_id, "layer_density.csv", tmp)) as f:
        return {row["layer"]: int(row["total"]) for row in csv.DictReader(f) if row["total"]}


def download_lineage(tracking_uri: str, run_id: str) -> list[dict]:
    """The rows of a trial's ``masks/lineage.jsonl``, oldest first; a damaged row is a ConfigError
    naming its line."""
    from raysparse.tracking.lineage import parse_rows

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(MlflowClient(tracking_uri).download_artifacts(run_id, LINEAGE, tmp)).read_bytes()
    return parse_rows(data.decode("utf-8", "replace"), run_id)


def download_model(tracking_uri: str, run_id: str, dst: str | Path) -> Path:
    """A trial's ``model/`` folder (state_dict.pt, config.json, build.json, model.pt2) in ``dst``."""
    client = MlflowClient(tracking_uri)
    files = {f.path for f in client.list_artifacts(run_id, "model")}
    if "model/state_dict.pt" not in files:
        status = client.get_run(run_id).info.status
        if status == "FINISHED" and "model/config.json" in files:
            raise ConfigError("run", f"run {run_id} logged its masks but no weights (its sweep's log_weights: "
                              "false); train its config again (model/config.json) to get them")
        raise ConfigError("run", f"run {run_id} ({status}) logged no final model; only a finished trial has one")
    return Path(client.download_artifacts(run_id, "model", str(dst)))


def add_run_artifacts(tracking_uri: str, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """The files of ``folder`` into a (finished) run's artifacts under ``artifact_path``: what is
    derived from the run later, e.g. its deployed network (``raysparse deploy``)."""
    MlflowClient(tracking_uri).log_artifacts(run_id, str(folder), artifact_path)


def run_params(tracking_uri: str, run_id: str) -> dict[str, str]:
    """A run's params as MLflow holds them (text); for a PBT trial that copied another, the values
    it trained with last replace those it started with (see ``download_exploits``)."""
    return _current_params(MlflowClient(tracking_uri).get_run(run_id))


def download_exploits(tracking_uri: str, run_id: str) -> list[dict]:
    """A PBT trial's exploits, oldest first: the epoch, source trial and run, masks hash and the
    sampled values it went on with ([] for a trial that never copied another)."""
    client = MlflowClient(tracking_uri)
    if not any(f.path == EXPLOITS for f in client.list_artifacts(run_id, Path(EXPLOITS).parent.as_posix())):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, EXPLOITS, tmp)).read_text())


def _current_params(run: Run) -> dict[str, str]:
    now = {k.removeprefix(PBT_PARAM_TAG): v for k, v in run.data.tags.items() if k.startswith(PBT_PARAM_TAG)}
    return {**run.data.params, **now}


def download_plots(tracking_uri: str, run_id: str, dst: str | Path) -> list[Path]:
    """A trial's ``plots/*.png`` copied into ``dst`` (none for a trial that did not finish)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    Path(dst).mkdir(parents=True, exist_ok=True)
    # the folder at once, by its artifact URI: a file at a time through runs:/ took ~0.35 s a file here
    # (each resolves the run again), and a report downloads the plots of its best trials
    folder = f"{client.get_run(run_id).info.artifact_uri}/plots"
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=folder, dst_path=str(dst),
                                                              tracking_uri=tracking_uri))
    except MlflowException:
        if client.list_artifacts(run_id, "plots"):
            raise
        return []  # a trial that did not finish drew none
    return sorted(downloaded.glob("*.png"))


def _trial_row(run: Run) -> dict:
    def time_of(ms):
        return pd.to_datetime(ms, unit="ms") if ms else pd.NaT

    return {
        "run_id": run.info.run_id, "trial_id": run.data.tags.get(TRIAL_TAG), "run_name": run.info.run_name,
        "status": run.info.status, "start_time": time_of(run.info.start_time), "end_time": time_of(run.info.end_time),
        "failure_reason": run.data.tags.get(FAILURE_TAG),
        **{f"params.{k}": v for k, v in _current_params(run).items()},
        **({"pbt_exploits": int(run.data.tags[PBT_EXPLOITS_TAG])} if PBT_EXPLOITS_TAG in run.data.tags else {}),
        **{f"metrics.{k}": v for k, v in run.data.metrics.items()},  # search results hold the latest step
    }


def _not_found(kind: str, value: str | None, choices) -> ConfigError:
    choices = sorted(c for c in choices if c)
    if not choices:
        return ConfigError("name", f"unknown {kind} {value!r}; there is none yet")
    return unknown_choice("name", kind, value, choices)
