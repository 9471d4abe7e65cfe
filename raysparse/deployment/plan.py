"""What ``deploy`` chose, layer by layer, and what it measured: a list of rows that prints as a table."""

from __future__ import annotations

from typing import NamedTuple

DENSE = "dense"


class PlanRow(NamedTuple):
    layer: str  # the weight's mask name (raysparse.sparsity.masks.weight_slots)
    shape: tuple[int, ...]
    density: float  # nonzero fraction of the weight (masks are zeros in it)
    kernel: str  # the one the deployed network runs
    timings: dict[str, float]  # milliseconds per call of every kernel measured ({} when not timed)

    @property
    def dense_ms(self) -> float | None:
        return self.timings.get(DENSE)

    @property
    def sparse_ms(self) -> float | None:
        """The fastest sparse kernel's milliseconds, if one was measured."""
        sparse = [ms for name, ms in self.timings.items() if name != DENSE]
        return min(sparse) if sparse else None


class Plan(list):
    """The rows, plus the whole network timed dense and deployed (``network_ms``) and whether the
    per-layer choices were undone because the network as a whole was not faster (``reverted``)."""

    def __init__(self, rows=(), *, batch_size: int = 1, network_ms: dict[str, float] | None = None,
                 reverted: bool = False):
        super().__init__(rows)
        self.batch_size, self.network_ms, self.reverted = batch_size, dict(network_ms or {}), reverted

    def sparse_layers(self) -> int:
        return sum(row.kernel != DENSE for row in self)

    def __str__(self) -> str:
        header = ("layer", "shape", "density", "kernel", "dense ms", "sparse ms")
        lines = [header] + [
            (row.layer, "x".join(map(str, row.shape)), f"{row.density:.3f}", row.kernel,
             _ms(row.dense_ms), _ms(row.sparse_ms))
            for row in self
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        total = f"batch {self.batch_size}: {self.sparse_layers()} of {len(self)} layers on sparse kernels"
        if self.network_ms:
            total += (f"; whole network {_ms(self.network_ms.get('dense'))} ms dense, "
                      f"{_ms(self.network_ms.get('deployed'))} ms deployed")
        if self.reverted:
            total += " (not faster as a whole: every layer kept dense)"
        return "\n".join(text + [total])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
