"""Prune potential (Liebenwein et al. 2021, "Lost in Pruning", https://arxiv.org/abs/2103.03014):
per method and evaluation distribution, the largest prune ratio at which the pruned network stays
within ``delta`` of the dense reference on that same distribution, judged on the task's main metric
in its direction: an accuracy at most ``delta`` below the dense one (the paper's error within
``delta``), a perplexity (any metric lower is better) at most ``delta`` above it, relatively:
``perplexity <= dense * (1 + delta)``, as perplexities have no common scale."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from raysparse.errors import ConfigError, shown

KEYS = ("method", "sparsity", "distribution")
COLUMNS = (*KEYS, "accuracy")  # the paper's rows: accuracy, higher is better
METRIC_COLUMNS = (*KEYS, "value", "direction")  # any metric: its value and "max" or "min" (and its name: metric)
MAX, MIN = "max", "min"  # as raysparse.tasks says them (it imports torch; a report does not)


def prune_potential(
    results: pd.DataFrame | Iterable[Mapping], *, delta: float = 0.005
) -> dict[tuple[str, str], float]:
    """``results``: rows with ``method``, ``sparsity``, ``distribution`` and ``accuracy``, or
    (any metric) ``value`` and its ``direction``, ``"max"`` or ``"min"`` (the same in every row;
    ``metric`` may name it); the dense reference rows have sparsity 0 (any method name).
    Repetitions of one (method, sparsity, distribution) are averaged first, as the paper does.

    A sparsity qualifies when its value is within ``delta`` of the reference's: for a max metric
    (accuracy), ``value >= reference - delta`` (``delta`` in [0, 1): error at most the reference
    error + delta); for a min metric (perplexity, loss), ``value <= reference + delta * |reference|``,
    i.e. ``perplexity <= dense * (1 + delta)`` (``delta`` >= 0, relative). The potential is the
    largest qualifying sparsity, or 0.0 when none qualifies. Returns {(method, distribution):
    potential} for every pruned method and every distribution."""
    table = pd.DataFrame(list(results)) if not isinstance(results, pd.DataFrame) else results
    metric_form = "value" in table.columns or "direction" in table.columns
    needed = METRIC_COLUMNS if metric_form else COLUMNS
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ConfigError("results", f"missing columns {missing}; needed: {', '.join(KEYS)} and accuracy, or "
                          "value and direction (max or min)")
    if metric_form:
        directions = sorted(set(table["direction"]), key=str)
        if len(directions) != 1 or directions[0] not in (MAX, MIN):
            raise ConfigError("results", f"direction {', '.join(map(shown, directions))}; allowed: one of max, "
                              "min, the same in every row (one metric)")
        direction = directions[0]
        table = table.rename(columns={"value": "_value"})
    else:
        direction = MAX
        table = table.rename(columns={"accuracy": "_value"})
    if direction == MAX and not 0 <= delta < 1:
        raise ConfigError("delta", f"got {delta!r}; allowed: an accuracy difference in [0, 1)")
    if direction == MIN and not 0 <= delta < float("inf"):
        raise ConfigError("delta", f"got {delta!r}; allowed: a relative increase >= 0 (0.05: 5% above the "
                          "dense reference)")
    mean = table.groupby(list(KEYS), as_index=False)["_value"].mean()
    dense = mean[mean["sparsity"] == 0]
    reference = dense.groupby("distribution")["_value"].mean()
    pruned = mean[mean["sparsity"] > 0]
    potentials: dict[tuple[str, str], float] = {}
    for (method, distribution), rows in pruned.groupby(["method", "distribution"]):
        if distribution not in reference:
            raise ConfigError(
                "results", f"no dense reference (sparsity 0) for distribution {distribution!r}"
            )
        qualifying = rows[_within(rows["_value"], reference[distribution], delta, direction)]
        potentials[(method, distribution)] = float(qualifying["sparsity"].max()) if len(qualifying) else 0.0
    for method in pruned["method"].unique():  # a method never evaluated on a distribution: no potential
        for distribution in reference.index:
            potentials.setdefault((method, distribution), 0.0)
    return potentials


def _within(values: pd.Series, reference: float, delta: float, direction: str) -> pd.Series:
    """Which values are within ``delta`` of ``reference`` (float sums a hair past the bound count)."""
    if direction == MAX:
        return values >= reference - delta - 1e-12
    return values <= reference + delta * abs(reference) + 1e-12 * max(1.0, abs(reference))


def potential_table(potentials: Mapping[tuple[str, str], float]) -> pd.DataFrame:
    """distribution x method, as ``raysparse potential`` prints and plots it."""
    rows = [{"method": m, "distribution": d, "potential": p} for (m, d), p in potentials.items()]
    return pd.DataFrame(rows).pivot(index="distribution", columns="method", values="potential").sort_index()
