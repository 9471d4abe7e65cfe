"""Sparsity patterns: N:M and block masks, top-k under a pattern, and the check that a mask holds one.

A weight is seen as the matrix its kernel multiplies, ``weight.flatten(1)``: a row per output
(a Linear's out_features, a convolution's out_channels), a column per input (a Linear's
in_features; a convolution's in_channels/groups * kh * kw in the order (channel, kernel row,
kernel column), the order of ``F.unfold``'s rows, i.e. the im2col matrix the kernel sees).

- ``unstructured``: any mask.
- ``N:M``: in every row, every group of M consecutive columns keeps **at most** N weights; a layer
  at density N/M therefore keeps exactly N in every group (the form 2:4 kernels take).
- ``block:RxC``: the matrix is tiled by R x C blocks, each kept or pruned whole; a block is ranked
  by the sum of its weights' scores.

A layer whose matrix does not divide (columns by M; rows by R and columns by C) cannot hold the
pattern: ``layer_patterns`` leaves it unstructured (the caller says so), rather than padding it
with a partial group that no N:M or BSR kernel takes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from raysparse.errors import ConfigError, shown
from raysparse.sparsity.scores import keep_top

UNSTRUCTURED_NAME = "unstructured"
ALLOWED = "unstructured, 'N:M' with 1 <= N < M (e.g. '2:4'), or 'block:RxC' with R, C >= 1 (e.g. 'block:1x4')"
_NM = re.compile(r"(\d{1,4}):(\d{1,4})")
_BLOCK = re.compile(r"block:(\d{1,4})x(\d{1,4})")


@dataclass(frozen=True)
class Unstructured:
    """Any mask: the top-k as every method picks it without a pattern."""

    name = UNSTRUCTURED_NAME
    max_density = 1.0
    unit = 1  # masks change by single weights

    def fits(self, shape: torch.Size) -> bool:
        return True

    def eligible(self, score: torch.Tensor, candidates: torch.Tensor, kept: torch.Tensor | None = None):
        return candidates

    def select(self, score: torch.Tensor, candidates: torch.Tensor, k: int, kept: torch.Tensor | None = None):
        """``k`` of the ``candidates`` with the highest scores (``kept``: already chosen elsewhere)."""
        return keep_top(score, candidates, k)

    def holds(self, mask: torch.Tensor) -> bool:
        return True


UNSTRUCTURED = Unstructured()


@dataclass(frozen=True)
class NM:
    """At most ``n`` of every ``m`` consecutive inputs of a row."""

    n: int
    m: int
    unit = 1

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def max_density(self) -> float:
        return self.n / self.m

    def fits(self, shape: torch.Size) -> bool:
        return len(shape) >= 2 and shape[1:].numel() % self.m == 0

    def _groups(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(tensor.shape[0], -1, self.m)  # [rows, groups, m], a view of the flattened matrix

    def eligible(self, score: torch.Tensor, candidates: torch.Tensor, kept: torch.Tensor | None = None):
        """The candidates that rank among the best ``n - (kept in their group)`` candidates of their
        group. Taking the global top-k of these is the best top-k under the pattern: the groups'
        caps form a partition matroid, on which greedy selection is optimal."""
        if kept is None and self.holds(candidates):  # pruning a mask that holds the pattern: every weight may stay
            return candidates
        ranked = self._groups(torch.where(candidates, score.float(), -torch.inf))
        best = ranked.topk(self.n, dim=-1, sorted=True).indices  # a group's n best, best first (cheaper than a sort)
        room = self.n - (self._groups(kept).sum(-1, keepdim=True) if kept is not None else 0)
        within = (torch.arange(self.n, device=best.device) < room).expand_as(best)
        eligible = torch.zeros_like(ranked, dtype=torch.bool).scatter_(-1, best, within)
        return eligible.view_as(candidates) & candidates

    def select(self, score: torch.Tensor, candidates: torch.Tensor, k: int, kept: torch.Tensor | None = None):
        """The best ``k`` candidates such that ``kept | chosen`` still holds at most ``n`` per group
        (fewer than ``k`` when the groups have no more room)."""
        return keep_top(score, self.eligible(score, candidates, kept), k)

    def holds(self, mask: torch.Tensor) -> bool:
        return bool((self._groups(mask).sum(-1) <= self.n).all())


@dataclass(frozen=True)
class Block:
    """Whole ``rows`` x ``cols`` blocks of the flattened weight matrix."""

    rows: int
    cols: int
    max_density = 1.0

    @property
    def name(self) -> str:
        return f"block:{self.rows}x{self.cols}"

    @property
    def unit(self) -> int:
        return self.rows * self.cols  # masks change by whole blocks

    def fits(self, shape: torch.Size) -> bool:
        return len(shape) >= 2 and shape[0] % self.rows == 0 and shape[1:].numel() % self.cols == 0

    def _blocks(self, tensor: torch.Tensor) -> torch.Tensor:
        matrix = tensor.reshape(tensor.shape[0], -1)
        return matrix.reshape(matrix.shape[0] // self.rows, self.rows, matrix.shape[1] // self.cols, self.cols)

    def eligible(self, score: torch.Tensor, candidates: torch.Tensor, kept: torch.Tensor | None = None):
        return candidates  # blocks are chosen in select; every weight of a candidate block may be kept

    def select(self, score: torch.Tensor, candidates: torch.Tensor, k: int, kept: torch.Tensor | None = None):
        """``round(k / (rows*cols))`` whole blocks, those with the highest summed score among the
        blocks whose weights are all candidates (so ``kept`` blocks, never candidates, stay apart)."""
        block_scores = self._blocks(score.detach().float()).sum((1, 3))
        block_candidates = self._blocks(candidates).all(3).all(1)
        chosen = keep_top(block_scores, block_candidates, round(k / self.unit))
        grid = chosen[:, None, :, None].expand(-1, self.rows, -1, self.cols)
        return grid.reshape(candidates.shape)

    def holds(self, mask: torch.Tensor) -> bool:
        kept = self._blocks(mask).sum((1, 3))
        return bool(((kept == 0) | (kept == self.unit)).all())


Pattern = Unstructured | NM | Block


def parse_pattern(value: object, field: str = "sparsity.pattern") -> Pattern:
    """``'unstructured'``, ``'2:4'``, ``'block:1x4'`` -> a pattern; anything else one ConfigError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        # YAML 1.1 reads an unquoted 2:4 as the base-60 integer 2*60 + 4 = 124
        raise ConfigError(field, f"got {value!r}, a number: YAML reads an unquoted {value // 60}:{value % 60} "
                          f"as {value}; quote it (\"{value // 60}:{value % 60}\"); allowed: {ALLOWED}")
    text = value.strip() if isinstance(value, str) else None
    if text == UNSTRUCTURED_NAME:
        return UNSTRUCTURED
    nm = _NM.fullmatch(text) if text is not None else None
    if nm and 1 <= int(nm[1]) < int(nm[2]):
        return NM(int(nm[1]), int(nm[2]))
    block = _BLOCK.fullmatch(text) if text is not None else None
    if block and int(block[1]) >= 1 and int(block[2]) >= 1:
        return Block(int(block[1]), int(block[2]))
    raise ConfigError(field, f"got {shown(value)}; allowed: {ALLOWED}")


def layer_patterns(
    pattern: Pattern, shapes: Mapping[str, torch.Size], dense_layers: Iterable[str] = ()
) -> dict[str, Pattern]:
    """The pattern each layer keeps: ``pattern`` where its shape divides, else unstructured; the
    layers kept dense have no pattern (they are all ones)."""
    dense = set(dense_layers)
    return {n: pattern if n not in dense and pattern.fits(s) else UNSTRUCTURED for n, s in shapes.items()}


def unpatterned_layers(pattern: Pattern, shapes: Mapping[str, torch.Size], dense_layers: Iterable[str] = ()):
    """The pruned layers that stay unstructured because their shape does not divide by the pattern."""
    dense = set(dense_layers)
    return [n for n, s in shapes.items() if n not in dense and not pattern.fits(s)]
