"""The sweep report as one self-contained HTML file: figures are embedded (base64 PNG), so the
file reads the same opened from disk, mailed, or viewed as an artifact in the MLflow UI."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
tr.front td { background: #eef6ee; }
img { max-width: 100%; border: 1px solid #eee; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; } .figures figure { margin: 0; width: 48%; }
.note { color: #666; } code, pre { background: #f6f6f6; padding: 1px 4px; }
"""


@dataclass
class ReportPage:
    """Everything the page shows; ``trial_figures`` maps a trial id to its PNG files."""

    sweep_name: str
    objectives: list[tuple[str, str]]
    ranked: pd.DataFrame
    columns: list[str]
    objective_plot: Path
    history_plot: Path | None = None
    top: int = 20  # rows of each table: the best trials (the CSVs hold every one)
    csv_names: dict[str, str] = field(default_factory=dict)  # "trials", "pareto": the CSV files' names
    status: str = "FINISHED"
    front: pd.DataFrame | None = None
    potential: pd.DataFrame | None = None
    potential_plot: Path | None = None
    potential_note: str = ""
    delta: float = 0.005
    best_config: dict | None = None
    trial_figures: dict[str, list[Path]] = field(default_factory=dict)
    run_url: str | None = None  # format string with {run_id}: links into the MLflow UI
    experiment_url: str | None = None
    stage_line: str = ""  # the sweep's dense stage (pretrain:), if it has one
    allocation_plot: Path | None = None  # a per-layer search's best allocation against depth
    other_texts: pd.DataFrame | None = None  # report.other_texts: does the best on val hold on evaluate_on's texts


def render(page: ReportPage) -> str:
    objectives = ", ".join(f"{c.removeprefix('metrics.')} ({mode})" for c, mode in page.objectives)
    finished = int((page.ranked["status"] == "FINISHED").sum()) if "status" in page.ranked else len(page.ranked)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(page.sweep_name)}: raysparse report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Sweep {_e(page.sweep_name)}</h1>",
        f"<p>{len(page.ranked)} trials ({finished} finished), sweep run {_e(page.status)}. "
        f"Objectives: {_e(objectives)}.",
    ]
    if page.experiment_url:
        parts.append(f" <a href='{_e(page.experiment_url)}'>Open the experiment in MLflow</a>.")
    parts.append("</p>")
    if page.stage_line:
        parts.append(f"<p>{_e(page.stage_line)} (not a trial: trained once, before them).</p>")
    parts += ["<h2>Objectives</h2>", _img(page.objective_plot, "objectives")]
    if page.history_plot is not None:
        parts.append(_img(page.history_plot, "objective by trial"))
    if page.allocation_plot is not None:
        parts += ["<h2>Allocation</h2>", _img(page.allocation_plot, "the best allocation against depth")]
    if page.other_texts is not None:
        parts += ["<h2>Other texts</h2>", "<p class='note'>Does the trial best on validation stay best on the "
                  "sweep's other evaluation texts (evaluate_on)? Spearman: rank correlation across finished "
                  "trials.</p>", page.other_texts.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    if page.front is not None:
        parts += [f"<h2>Pareto front ({len(page.front)} trials)</h2>",
                  _bounded(page.front, page, "pareto", "trials of the front"),
                  _table(page.front.head(page.top), page.columns, page)]
    parts.append("<h2>Prune potential</h2>")
    if page.potential is not None:
        parts += [
            "<p>The largest sparsity whose main task metric holds against the dense reference's, per "
            f"evaluation distribution (Lost in Pruning): an accuracy at most {page.delta:g} below it, a metric "
            f"to minimize (perplexity) at most (1 + {page.delta:g}) times it.</p>",
            page.potential.to_html(float_format=lambda v: f"{v:.3f}", border=0),
            _img(page.potential_plot, "prune potential"),
        ]
    else:
        parts.append(f"<p class='note'>{_e(page.potential_note)}</p>")
    parts += ["<h2>Trials, best first</h2>", _bounded(page.ranked, page, "trials", "trials"),
              _table(page.ranked.head(page.top), page.columns, page)]
    for trial_id, figures in page.trial_figures.items():
        parts.append(f"<h2>Trial {_e(trial_id)}</h2><div class='figures'>")
        parts += [f"<figure>{_img(path, f'{trial_id} {path.stem}')}</figure>" for path in figures]
        parts.append("</div>")
    if page.best_config is not None:
        config = json.dumps(page.best_config, indent=2, sort_keys=True, default=str)
        parts += ["<h2>Best configuration</h2>", f"<pre>{_e(config)}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _bounded(trials: pd.DataFrame, page: ReportPage, csv: str, what: str) -> str:
    """The note above a table cut to its ``top`` rows; nothing when it shows them all."""
    if len(trials) <= page.top:
        return ""
    where = f" in {_e(page.csv_names[csv])}" if page.csv_names.get(csv) else " in the CSV"
    return f"<p class='note'>The {page.top} best of {len(trials)} {what}; every one{where}.</p>"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).exists():
        return f"<p class='note'>no figure: {_e(alt)}</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _table(trials: pd.DataFrame, columns: list[str], page: ReportPage) -> str:
    front_ids = set(page.front["trial_id"]) if page.front is not None and "trial_id" in page.front else set()
    shown = [c for c in columns if c in trials.columns]
    head = "".join(f"<th>{_e(c.removeprefix('metrics.').removeprefix('params.'))}</th>" for c in shown)
    rows = []
    for _, trial in trials.iterrows():
        cells = [_cell(column, trial.get(column), trial, page) for column in shown]
        marker = " class='front'" if trial.get("trial_id") in front_ids else ""
        rows.append(f"<tr{marker}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _cell(column: str, value, trial, page: ReportPage) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "<td></td>"
    if column == "trial_id" and page.run_url and "run_id" in trial:
        link = page.run_url.format(run_id=trial["run_id"])
        return f"<td class='text'><a href='{_e(link)}'>{_e(value)}</a></td>"
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    return f"<td class='text'>{_e(value)}</td>"
