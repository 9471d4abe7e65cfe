"""Prune potential (Liebenwein et al. 2021, "Lost in Pruning", https://arxiv.org/abs/2103.03014):
per method and evaluation distribution, the largest prune ratio at which the pruned network's
error stays within ``delta`` of the dense reference's error on that same distribution."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from raysparse.errors import ConfigError

COLUMNS = ("method", "sparsity", "distribution", "accuracy")


def prune_potential(
    results: pd.DataFrame | Iterable[Mapping], *, delta: float = 0.005
) -> dict[tuple[str, str], float]:
    """``results``: rows with ``method``, ``sparsity``, ``distribution``, ``accuracy``; the dense
    reference rows have sparsity 0 (any method name). Repetitions of one (method, sparsity,
    distribution) are averaged first, as the paper does. A sparsity qualifies when its error
    is at most the reference error + ``delta`` (accuracy >= reference - delta); the potential is
    the largest qualifying sparsity, or 0.0 when none qualifies. Returns
    {(method, distribution): potential} for every pruned method and every distribution."""
    table = pd.DataFrame(list(results)) if not isinstance(results, pd.DataFrame) else results
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError("results", f"missing columns {missing}; needed: {', '.join(COLUMNS)}")
    if not 0 <= delta < 1:
        raise ConfigError("delta", f"got {delta!r}; allowed: an accuracy difference in [0, 1)")
    mean = table.groupby(["method", "sparsity", "distribution"], as_index=False)["accuracy"].mean()
    dense = mean[mean["sparsity"] == 0]
    reference = dense.groupby("distribution")["accuracy"].mean()
    pruned = mean[mean["sparsity"] > 0]
    potentials: dict[tuple[str, str], float] = {}
    for (method, distribution), rows in pruned.groupby(["method", "distribution"]):
        if distribution not in reference:
            raise ConfigError(
                "results", f"no dense reference (sparsity 0) for distribution {distribution!r}"
            )
        qualifying = rows[rows["accuracy"] >= reference[distribution] - delta - 1e-12]
        potentials[(method, distribution)] = float(qualifying["sparsity"].max()) if len(qualifying) else 0.0
    for method in pruned["method"].unique():  # a method never evaluated on a distribution: no potential
        for distribution in reference.index:
            potentials.setdefault((method, distribution), 0.0)
    return potentials


def potential_table(potentials: Mapping[tuple[str, str], float]) -> pd.DataFrame:
    """distribution x method, as ``raysparse potential`` prints and plots it."""
    rows = [{"method": m, "distribution": d, "potential": p} for (m, d), p in potentials.items()]
    return pd.DataFrame(rows).pivot(index="distribution", columns="method", values="potential").sort_index()
