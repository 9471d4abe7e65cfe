"""Sweep reports: trials ranked by objective, the Pareto front, a CSV and a plot (matplotlib).

Tables are one row per trial with ``params.<config key>`` and ``metrics.<name>`` columns (as
``raysparse.tracking.load_sweep`` returns them); objectives name columns.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from raysparse import plots
from raysparse.report_html import ReportPage, render

Objectives = Sequence[tuple[str, str]]  # (column, "max" | "min")
# rows of each HTML table: a page of a thousand rows is read by nobody and takes seconds to open;
# the CSV holds every trial
TOP_ROWS = 20


def rank_trials(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Trials sorted best first by the first objective (ties broken by the next ones);
    trials that never reported it go last."""
    columns = [c for c, _ in objectives if c in trials.columns]
    ascending = [mode == "min" for c, mode in objectives if c in trials.columns]
    if not columns:
        return trials.reset_index(drop=True)
    # stable: tied trials keep their order (oldest first) on every CPU; numpy's default quicksort
    # orders ties differently where its vectorized sort differs (AVX2, AVX-512, none)
    return trials.sort_values(columns, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials a sweep selects from: those that trained to the end. One that ASHA stopped has
    no final network, and its metrics are from an earlier epoch of a schedule it did not finish."""
    return trials[trials["status"] == "FINISHED"] if "status" in trials.columns else trials


def pareto_front(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """The non-dominated finished trials: no other is at least as good on every objective and
    strictly better on one. Trials missing an objective value are left out."""
    columns = [c for c, _ in objectives]
    if not set(columns) <= set(trials.columns):  # an objective no trial reported: no trial is on the front
        return trials.iloc[:0]
    valid = finished(trials).dropna(subset=columns)
    if valid.empty:
        return valid
    # turn every objective into "larger is better"
    values = np.column_stack([valid[c].to_numpy(float) * (1 if m == "max" else -1) for c, m in objectives])
    dominated = np.zeros(len(values), dtype=bool)
    for i, row in enumerate(values):
        better_or_equal = np.all(values >= row, axis=1)
        strictly_better = np.any(values > row, axis=1)
        dominated[i] = np.any(better_or_equal & strictly_better)
    return rank_trials(valid[~dominated], objectives)


def write_report(
    trials: pd.DataFrame, objectives: Objectives, out_dir: str | Path, *, name: str,
    best_config: dict | None = None, potential: pd.DataFrame | None = None, delta: float = 0.005,
    page: dict | None = None, top: int = TOP_ROWS,
) -> dict[str, Path]:
    """``<name>_trials.csv`` (every trial, ranked), ``<name>_best.json``, ``<name>_pareto.csv``
    (several objectives), ``<name>.png`` (objectives, front marked), ``<name>_history.png`` (the
    first objective in start order, best so far), ``<name>_potential.csv/.png`` (given a
    prune-potential table) and ``<name>.html`` with all of them: its tables hold the ``top`` best
    trials (and at most ``top`` of the front), the CSVs every one. ``page`` adds ReportPage fields
    (trial figures, MLflow links). Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranked = rank_trials(trials, objectives)
    paths = {"trials": out / f"{name}_trials.csv", "plot": out / f"{name}.png"}
    ranked.to_csv(paths["trials"], index=False)
    if best_config is not None:
        paths["best"] = out / f"{name}_best.json"
        paths["best"].write_text(json.dumps(best_config, indent=2, sort_keys=True, default=str))
    front = pareto_front(trials, objectives) if len(objectives) > 1 else None
    if front is not None:
        paths["pareto"] = out / f"{name}_pareto.csv"
        front.to_csv(paths["pareto"], index=False)
    y = objectives[0][0]
    x = objectives[1][0] if len(objectives) > 1 else "metrics.density"
    title = f"{name}: {len(trials)} trials" + (", Pareto front" if front is not None else "")
    plots.pareto(ranked, x, y, front if len(objectives) == 2 else None, paths["plot"], title=title)
    paths["history"] = out / f"{name}_history.png"
    plots.search_history(trials, y, objectives[0][1], paths["history"], title=f"{name}: {y.removeprefix('metrics.')} "
                         "by trial")
    if potential is not None:
        paths["potential"], paths["potential_plot"] = out / f"{name}_potential.csv", out / f"{name}_potential.png"
        potential.to_csv(paths["potential"])
        plots.potential(potential, paths["potential_plot"], title=f"{name}: prune potential (delta {delta:g})")
    columns = ["trial_id", "status", *[c for c, _ in objectives], "metrics.density", "params.sparsity.method",
               "metrics.epoch", "failure_reason"]
    paths["html"] = out / f"{name}.html"
    paths["html"].write_text(render(ReportPage(
        sweep_name=name,
        objectives=list(objectives), ranked=ranked, columns=list(dict.fromkeys(columns)),
        objective_plot=paths["plot"], history_plot=paths["history"], front=front, potential=potential,
        potential_plot=paths.get("potential_plot"), delta=delta, best_config=best_config, top=top,
        csv_names={"trials": paths["trials"].name, "pareto": paths["pareto"].name if "pareto" in paths else ""},
        **(page or {}),
    )))
    return paths


def sweep_potential(trials: pd.DataFrame, delta: float, stage: dict | None = None) -> tuple[pd.DataFrame | None, str]:
    """The prune-potential table (distribution x method) of a sweep, or None and why not."""
    from raysparse.errors import ConfigError
    from raysparse.robustness.potential import potential_table, prune_potential

    try:
        return potential_table(prune_potential(sweep_potential_rows(trials, stage), delta=delta)), ""
    except ConfigError as missing:
        return None, f"Not measured: {missing.message}."


# an image classifier's robustness suite: metric prefix -> the prefix of the distributions it measures
_DISTRIBUTIONS = {"metrics.corrupted_accuracy.": "", "metrics.noise_accuracy.": "noise_"}
_SHIFT = "metrics.shift."  # robustness.datasets: metrics.shift.<name>.<metric>, distribution shift.<name>
# the default task's main metric, known without importing raysparse.tasks (torch: seconds)
_CLASSIFICATION = ("accuracy", "max")


def sweep_potential_rows(trials: pd.DataFrame, stage: dict | None = None) -> list[dict]:
    """Prune-potential rows (``robustness.potential``: method, sparsity, distribution, metric,
    direction, value) from a sweep's trials, on the main metric of the task they learn (their
    ``task`` param: accuracy, max; a language model's perplexity, min): the test set ("clean"),
    every other dataset (``shift.wiki``, from ``robustness.datasets``) and, for accuracy, every
    corrupted distribution a trial reported (``contrast_5``) and every noise ball
    (``noise_eps_0.1``); a ``dense`` trial is the reference at sparsity 0, or else the sweep's
    finished dense ``stage`` (``SweepData.stage``), measured as a trial is."""
    from raysparse.errors import ConfigError

    done = finished(trials)
    metric, direction = _sweep_main_metric(done)
    # a sweep of a loop's own (val_loss only) has nothing to compare; say so before asking for a
    # dense trial it may well have
    if not done.empty and all(pd.isna(trial.get(_clean_column(trial, metric))) for _, trial in done.iterrows()):
        names = sorted({_clean_column(trial, metric).removeprefix("metrics.") for _, trial in done.iterrows()})
        raise ConfigError("metrics", f"no finished trial reported {' or '.join(names)} (prune potential "
                          f"compares the task's main metric, {metric})")
    rows = [row for _, trial in done.iterrows() for row in _potential_rows(trial, metric, direction)]
    if not any(r["sparsity"] == 0 for r in rows) and stage is not None and stage.get("status") == "FINISHED":
        rows += _potential_rows(pd.Series(stage), metric, direction, method="dense")
    if not any(r["sparsity"] == 0 for r in rows):
        raise ConfigError("name", "the sweep has no finished dense reference trial (sparsity.method: dense). Add "
                          "a trial with sparsity.method: dense, or a pretrain: block (a dense stage), to measure it")
    return rows


def _sweep_main_metric(done: pd.DataFrame) -> tuple[str, str]:
    """(main metric, direction) of the task the finished trials learn: one for all of them."""
    from raysparse.errors import ConfigError

    found = {_main_metric(_recorded_task(trial)) for _, trial in done.iterrows()} or {_CLASSIFICATION}
    if len(found) > 1:
        listed = ", ".join(f"{metric} ({direction})" for metric, direction in sorted(found))
        raise ConfigError("task", f"the sweep's trials learn tasks with different main metrics ({listed}); prune "
                          "potential compares one")
    return found.pop()


def _recorded_task(trial: pd.Series) -> str | None:
    """The task a trial's params name: ``task``, ``task.name`` ({name: ..., <option>: ...}) or
    ``task.python`` (a task= object, by import path); None: none recorded (the default)."""
    for column in ("params.task", "params.task.name", "params.task.python"):
        value = trial.get(column)
        if isinstance(value, str) and value:
            return value
    return None


@functools.cache
def _main_metric(task: str | None) -> tuple[str, str]:
    if task in (None, "classification"):
        return _CLASSIFICATION
    from raysparse.tasks import get_task_class  # a ConfigError if it does not import here: no potential, and why

    metrics = get_task_class(task, "params.task").metrics
    main = next(iter(metrics))
    return main, metrics[main]


def _clean_column(trial: pd.Series, metric: str) -> str:
    # the suite is measured on robustness.split: "clean" is the same split's metric
    split = "val" if trial.get("params.robustness.split") == "val" else "test"
    return f"metrics.{split}_{metric}"


def _potential_rows(trial: pd.Series, metric: str, direction: str, method: str | None = None) -> list[dict]:
    method = method or trial.get("params.sparsity.method")
    clean, density = trial.get(_clean_column(trial, metric)), trial.get("metrics.density")
    if pd.isna(clean) or (method != "dense" and pd.isna(density)):  # a trial that never measured them
        return []
    sparsity = 0.0 if method == "dense" else round(1.0 - float(density), 4)
    measured = {"clean": clean}
    for column, value in trial.items():
        if pd.isna(value):
            continue
        for prefix, named in _DISTRIBUTIONS.items():
            if metric == "accuracy" and column.startswith(prefix):
                measured[named + column.removeprefix(prefix)] = value
        name, _, of = column.removeprefix(_SHIFT).partition(".")
        if column.startswith(_SHIFT) and of == metric:
            measured[f"shift.{name}"] = value
    return [{"method": method, "sparsity": sparsity, "distribution": distribution, "metric": metric,
             "direction": direction, "value": value} for distribution, value in measured.items()]


def stage_line(stage: dict | None, objectives: Objectives = ()) -> str:
    """One line on a sweep's dense stage (``SweepData.stage``): its val accuracy, or else the first
    of the sweep's ``objectives`` it reported (a language model's val_perplexity); empty without one."""
    if stage is None:
        return ""
    epochs = stage.get("params.epochs", "?")
    status = "" if stage.get("status") == "FINISHED" else f" ({str(stage.get('status')).lower()})"
    return f"dense stage: {epochs} epochs, {_stage_metric(stage, objectives)}, run {stage['run_id']}{status}"


def _stage_metric(stage: dict, objectives: Objectives) -> str:
    for column in ("metrics.val_accuracy", *(c for c, _ in objectives)):
        value = stage.get(column)
        if isinstance(value, float) and not np.isnan(value):
            name = "val accuracy" if column == "metrics.val_accuracy" else column.removeprefix("metrics.")
            return f"{name} {value:.4f}"
    return "val accuracy -"  # neither reported (a stage that failed early)


def sweep_objectives(sweep_params: dict[str, str]) -> list[tuple[str, str]]:
    """The objectives a sweep's parent run recorded (``sweep.objectives.<metric>: max|min``)."""
    prefix = "sweep.objectives."
    found = [(f"metrics.{k.removeprefix(prefix)}", v) for k, v in sweep_params.items() if k.startswith(prefix)]
    return found or [("metrics.val_accuracy", "max")]


def report_sweep(tracking_uri: str, data, out_dir: str | Path, *, delta: float = 0.005,
                 figures_of: int = 3) -> dict[str, Path]:
    """Write the report of a sweep as MLflow recorded it (``data``: ``tracking.load_sweep``) and
    log its files to the sweep's parent run under ``report/``. The HTML shows the plots of the
    Pareto front's trials (several objectives) or of the ``figures_of`` best ones."""
    from raysparse.tracking import SweepRun, download_plots

    out = Path(out_dir)
    objectives = sweep_objectives(data.params)
    done = finished(rank_trials(data.trials, objectives))
    shown = pareto_front(done, objectives) if len(objectives) > 1 else done.head(figures_of)
    with ThreadPoolExecutor(max_workers=4) as pool:  # each download waits on the server, not on this CPU
        figures = dict(pool.map(
            lambda row: (row.trial_id, download_plots(tracking_uri, row.run_id, out / "trials" / str(row.trial_id))),
            list(shown.head(2 * figures_of).itertuples())))
    potential, note = sweep_potential(data.trials, delta, data.stage)
    best = {k: v for k, v in done.iloc[0].items() if k.startswith("params.")} if len(done) else None
    experiment_url = f"{tracking_uri}/#/experiments/{data.experiment_id}"
    allocation = _allocation_plot(tracking_uri, data, done, out / f"{data.sweep_name}_allocation.png")
    paths = write_report(
        data.trials, objectives, out, name=data.sweep_name, best_config=best, potential=potential, delta=delta,
        page={"status": data.parent_status, "potential_note": note, "trial_figures": figures,
              "allocation_plot": allocation, "other_texts": other_texts(done),
              "stage_line": stage_line(data.stage, objectives),
              "experiment_url": experiment_url, "run_url": experiment_url + "/runs/{run_id}"},
    )
    if allocation is not None:
        paths["allocation"] = allocation
    parent = SweepRun.attach(tracking_uri, data.experiment_name, data.parent_run_id)
    for path in paths.values():
        parent.log_artifact(path, "report")
    return paths


def other_texts(done: pd.DataFrame) -> pd.DataFrame | None:
    """Whether what is best on the validation split holds on each ``evaluate_on`` text: per text,
    the rank correlation (Spearman) of its main metric with the validation one across the finished
    trials, the value of the trial best on validation, and the best value any trial reached there."""
    if len(done) < 2:
        return None
    main, direction = _sweep_main_metric(done)
    val = f"metrics.val_{main}"
    columns = [c for c in done.columns if c.startswith("metrics.") and c.endswith(f"_{main}")
               and c not in (val, f"metrics.test_{main}", f"metrics.best_val_{main}")]
    if val not in done.columns or not columns:
        return None
    best_on_val = done.sort_values(val, ascending=direction != "max").iloc[0]
    rows = []
    for column in columns:
        values = done[[val, column]].dropna()
        rows.append({
            "text": column.removeprefix("metrics.").removesuffix(f"_{main}"),
            "spearman_with_val": float(values[val].rank().corr(values[column].rank())) if len(values) > 1 else None,
            f"best_on_val_{main}": best_on_val.get(column),
            f"best_{main}_there": float(values[column].max() if direction == "max" else values[column].min()),
            "trials": len(values),
        })
    return pd.DataFrame(rows)


def _allocation_plot(tracking_uri: str, data, done: pd.DataFrame, path: Path) -> Path | None:
    """The best trial's allocation (a per-layer search's ``layer_densities``) by depth, beside the
    heuristics' the sweep logged (``allocations.json``: uniform, OWL); None for other sweeps."""
    from raysparse.tracking.reading import download_json, layer_sizes_of

    prefix = "params.sparsity.layer_densities."
    best = {k.removeprefix(prefix): float(v) for k, v in done.iloc[0].items()
            if k.startswith(prefix) and pd.notna(v)} if len(done) else {}
    if not best:
        return None
    references = download_json(tracking_uri, data.parent_run_id, "allocations.json") or {}
    sizes = references.pop("layer_sizes", None) or layer_sizes_of(tracking_uri, done.iloc[0]["run_id"])
    if not sizes:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return plots.allocation_by_depth({f"best ({done.iloc[0]['trial_id']})": best, **references}, sizes, path,
                                     title=f"{data.sweep_name}: the best allocation against depth")
