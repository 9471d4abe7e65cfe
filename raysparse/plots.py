"""Figures for trials and sweeps (matplotlib, written to PNG files; no display needed).

Each function takes plain data (dicts, DataFrames) and a path, so trials, reports and tests all
draw the same figure from what MLflow recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

History = Mapping[str, Sequence[tuple[int, float]]]  # metric -> [(epoch, value), ...]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: trials and servers have no display
    import matplotlib.pyplot as plt

    return plt


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; a sweep's driver imports it ahead, in a thread."""
    return _pyplot()


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def training_curves(history: History, path: str | Path, *, title: str = "", metric: str = "accuracy") -> Path:
    """Sparsity (1 - density) and the task's main ``metric`` (val and test) over the epochs,
    sparsity on the right axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, style in ((f"val_{metric}", "C0-"), (f"test_{metric}", "C2:")):
        points = sorted(history.get(name, ()))
        if points:
            ax.plot(*zip(*points, strict=True), style, marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    density = sorted(history.get("density", ()))
    if density:
        epochs, values = zip(*density, strict=True)
        right.plot(epochs, [1 - v for v in values], "C3-", marker=".", label="sparsity")
    right.set_ylabel("sparsity", color="C3")
    right.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    if lines:
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
    ax.set_title(title or f"sparsity and {metric} over training")
    return _save(fig, path)


def layer_density(densities: Mapping[str, float], path: str | Path, *, title: str = "") -> Path:
    """One horizontal bar per masked layer, in model order, with the global density marked."""
    plt = _pyplot()
    names = list(densities)
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.32 * len(names) + 1.2)))
    values = [densities[n] for n in names]
    ax.barh(range(len(names)), values, color="C0")
    for row, value in enumerate(values):
        ax.text(min(value, 0.85) + 0.01, row, f"{value:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()  # first layer on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("density (fraction of weights kept)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title or "density per layer")
    return _save(fig, path)


def blocks_and_types(names) -> tuple[list[str], list[str], dict[str, tuple[str, str]]] | None:
    """Blocks in model order, matrix types in first-seen order, and layer -> (block, type), for
    layers named by numbered blocks (``model.layers.3.mlp.up_proj``); None with fewer than 2 blocks."""
    from raysparse.sparsity.owl import block_groups

    place = {}
    for name, block in block_groups(list(names)).items():
        if block != name:
            place[name] = (block.rstrip("."), name[len(block):].lstrip("."))
    blocks = list(dict.fromkeys(b for b, _ in place.values()))
    if len(blocks) < 2:
        return None
    return blocks, list(dict.fromkeys(t for _, t in place.values())), place


def allocation_heatmap(densities: Mapping[str, float], path: str | Path, *, title: str = "") -> Path | None:
    """Density by block (columns, in depth order) and matrix type (rows): one cell per layer;
    None where the layers are not numbered blocks."""
    found = blocks_and_types(densities)
    if found is None:
        return None
    blocks, types, place = found
    plt = _pyplot()
    import numpy as np

    grid = np.full((len(types), len(blocks)), np.nan)
    for name, (block, kind) in place.items():
        grid[types.index(kind), blocks.index(block)] = densities[name]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.25 * len(blocks) + 2.5), 0.35 * len(types) + 1.6))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-9, float(np.nanmax(grid))))
    ax.set_yticks(range(len(types)), types, fontsize=7)
    ax.set_xticks(range(len(blocks)), [str(i) for i in range(len(blocks))], fontsize=7)
    ax.set_xlabel("block (depth)")
    fig.colorbar(image, ax=ax, label="density")
    ax.set_title(title or "density by block and matrix type")
    return _save(fig, path)


def allocation_by_depth(allocations: Mapping[str, Mapping[str, float]], sizes: Mapping[str, int],
                        path: str | Path, *, title: str = "") -> Path | None:
    """Each allocation's density per block (its layers' kept weights over their weights) against
    depth, one line each (e.g. the best searched one, OWL's, uniform's); None without blocks."""
    found = blocks_and_types(sizes)
    if found is None:
        return None
    blocks, _, place = found
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for style, (label, densities) in zip(("-o", "--s", ":^", "-.v"), allocations.items()):
        per_block = []
        for block in blocks:
            layers = [n for n, (b, _) in place.items() if b == block and n in densities]
            total = sum(sizes[n] for n in layers)
            per_block.append(sum(densities[n] * sizes[n] for n in layers) / total if total else float("nan"))
        ax.plot(range(len(blocks)), per_block, style, ms=3, label=label)
    ax.set_xlabel("block (depth)")
    ax.set_ylabel("density (fraction kept)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "allocation against depth")
    return _save(fig, path)


def pareto(trials: pd.DataFrame, x: str, y: str, front: pd.DataFrame | None, path: str | Path, *,
           title: str) -> Path:
    """Trials as points coloured by method, the front as a dashed line through its points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if x in trials.columns and y in trials.columns:
        method = trials.get("params.sparsity.method", pd.Series("trial", index=trials.index)).fillna("-")
        for label, group in trials.groupby(method):
            ax.scatter(group[x], group[y], label=str(label), alpha=0.8)
        if front is not None and not front.empty:
            ordered = front.sort_values(x)
            ax.plot(ordered[x], ordered[y], "k--", lw=1, marker="o", mfc="none", ms=10, label="Pareto front")
        ax.set_xlabel(x.removeprefix("metrics."))
        ax.set_ylabel(y.removeprefix("metrics."))
        ax.legend(fontsize=8)
    else:
        missing = y if y not in trials.columns else x
        ax.text(0.5, 0.5, f"no trial reported {missing.removeprefix('metrics.')!r}", ha="center", va="center")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def search_history(trials: pd.DataFrame, y: str, mode: str, path: str | Path, *, title: str) -> Path:
    """Each trial's ``y`` in the order the trials started, and the best so far: how the search
    converged, readable for a thousand trials where a table is not."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if y in trials.columns and trials[y].notna().any():
        ordered = trials.sort_values("start_time", kind="stable") if "start_time" in trials.columns else trials
        values = ordered[y].to_numpy(float)
        order = range(1, len(values) + 1)
        best = pd.Series(values).cummax() if mode == "max" else pd.Series(values).cummin()
        ax.scatter(order, values, s=8, alpha=0.5, label="trial")
        ax.plot(order, best.ffill(), "k-", lw=1.2, label="best so far")
        ax.set_xlabel("trial (in start order)")
        ax.set_ylabel(y.removeprefix("metrics."))
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no trial reported {y.removeprefix('metrics.')!r}", ha="center", va="center")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def potential(table: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Grouped bars: one group per evaluation distribution, one bar per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(table)), 4.4))
    table.plot.bar(ax=ax)
    ax.set_ylabel("prune potential")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
