"""``MlflowClient`` calls shared by the sweep run, the trial run and the reader.

Only ``MlflowClient`` is used, never the fluent ``mlflow.start_run`` API: its active run is
process-global state, so two trials (or threads) in one process would log into each other.
"""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException

from raysparse.errors import ConfigError, cut, shown
from raysparse.tracking.naming import FAILURE_TAG, PARENT_TAG, ROLE_TAG, STAGE_TAG, TRIAL_TAG

_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
_MAX_REASON_LENGTH = 8000  # MLflow's tag value limit


# MLflow 3's UI opens an experiment of unknown kind on its GenAI (traces) pages; ours are
# training experiments, whose page is the runs table
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags=EXPERIMENT_KIND)
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
    _log_metric_steps(client, run_id, [(metrics, step)])


def _log_metric_steps(client: MlflowClient, run_id: str, rows: list[tuple[dict[str, float], int]]) -> None:
    """Metrics of several steps in as few requests as MLflow's batch limit allows."""
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, int(step)) for metrics, step in rows for k, v in metrics.items()]
    for start in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start : start + _METRICS_PER_BATCH])


def _set_failure_reason(client: MlflowClient, run_id: str, reason: str) -> None:
    # cut in the middle: the end of a reason says what to do next (raysparse sweep --resume NAME)
    client.set_tag(run_id, FAILURE_TAG, cut(reason, _MAX_REASON_LENGTH))


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


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str | None = None, *,
              where: str = "") -> list[Run]:
    """The trials' runs under a sweep's parent run (its dense stage is a child run, not a trial);
    ``where``: more of MLflow's filter (``attributes.status = 'RUNNING'``), applied by the server:
    a sweep of a thousand trials is a thousand runs to send for every call that looks for a few."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{ROLE_TAG}` = 'trial'"
    if trial_id is not None:
        query += f" and tags.`{TRIAL_TAG}` = '{_quotable(trial_id, 'trial_id')}'"
    if where:
        query += f" and {where}"
    return _search(client, experiment_id, query)


RUNNING = "attributes.status = 'RUNNING'"


def _stage_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, stage: str) -> list[Run]:
    """The runs of one stage of a sweep (``pretrain``), oldest first."""
    return _search(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{STAGE_TAG}` = '{stage}'")


def _quotable(value: str, field: str = "name") -> str:
    """``value`` inside an MLflow filter's quotes; no name raysparse gives holds a quote."""
    if "'" in value:
        raise ConfigError(field, f"got {shown(value)}; allowed: names without quotes (sweep names are ASCII "
                          "letters, digits, '-' and '_')")
    return value
