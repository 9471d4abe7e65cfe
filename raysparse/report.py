"""Sweep reports: trials ranked by objective, the Pareto front, a CSV and a plot (matplotlib).

Tables are one row per trial with ``params.<config key>`` and ``metrics.<name>`` columns (as
``raysparse.tracking.load_sweep`` returns them); objectives name columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

Objectives = Sequence[tuple[str, str]]  # (column, "max" | "min")


def rank_trials(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Trials sorted best first by the first objective (ties broken by the next ones);
    trials that never reported it go last."""
    columns = [c for c, _ in objectives if c in trials.columns]
    ascending = [mode == "min" for c, mode in objectives if c in trials.columns]
    if not columns:
        return trials.reset_index(drop=True)
    return trials.sort_values(columns, ascending=ascending, na_position="last").reset_index(drop=True)


def pareto_front(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """The non-dominated trials: no other trial is at least as good on every objective and
    strictly better on one. Trials missing an objective value are left out."""
    columns = [c for c, _ in objectives]
    valid = trials.dropna(subset=columns)
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
    best_config: dict | None = None,
) -> dict[str, Path]:
    """``<name>_trials.csv`` (ranked), ``<name>_best.json``, ``<name>_pareto.csv`` (several
    objectives) and ``<name>.png``. Returns the paths written."""
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
    _plot(ranked, objectives, front, paths["plot"], name)
    return paths


def _plot(trials: pd.DataFrame, objectives: Objectives, front, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    first = objectives[0][0]
    x_col = objectives[1][0] if len(objectives) > 1 else "metrics.density"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    method = trials.get("params.sparsity.method", pd.Series(["trial"] * len(trials), index=trials.index))
    if x_col in trials.columns and first in trials.columns:
        for label, group in trials.groupby(method.fillna("-")):
            ax.scatter(group[x_col], group[first], label=str(label), alpha=0.8)
        if front is not None and not front.empty:
            ordered = front.sort_values(x_col)
            ax.plot(ordered[x_col], ordered[first], "k--", lw=1, label="Pareto front")
        ax.set_xlabel(x_col)
        ax.set_ylabel(first)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no trial reported {first!r}", ha="center", va="center")
    ax.set_title(f"{name}: {len(trials)} trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_potential_rows(trials: pd.DataFrame) -> list[dict]:
    """Prune-potential rows from a sweep's trials: the test set ("clean") and every corrupted
    distribution a trial reported; a ``dense`` trial is the reference at sparsity 0."""
    from raysparse.errors import ConfigError

    rows = []
    for _, trial in trials[trials["status"] == "FINISHED"].iterrows():
        method = trial.get("params.sparsity.method")
        sparsity = 0.0 if method == "dense" else round(1.0 - float(trial["metrics.density"]), 4)
        rows.append({"method": method, "sparsity": sparsity, "distribution": "clean",
                     "accuracy": trial["metrics.test_accuracy"]})
        for column, value in trial.items():
            if column.startswith("metrics.corrupted_accuracy.") and pd.notna(value):
                rows.append({"method": method, "sparsity": sparsity, "accuracy": value,
                             "distribution": column.removeprefix("metrics.corrupted_accuracy.")})
    if not any(r["sparsity"] == 0 for r in rows):
        raise ConfigError("name", "the sweep has no finished dense reference trial (sparsity.method: dense)")
    return rows


def plot_potential(table: pd.DataFrame, path: Path, *, title: str) -> None:
    """Grouped bars: one group per distribution, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(table)), 4.4))
    table.plot.bar(ax=ax)
    ax.set_ylabel("prune potential")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
