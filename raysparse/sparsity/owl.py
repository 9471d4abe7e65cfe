"""OWL: Outlier Weighed Layerwise sparsity (Yin et al. 2024, https://arxiv.org/abs/2310.05175).

A layer's outlier ratio D_l is the fraction of its scores above ``M`` times the layer's mean
score; the scores are Wanda's |W_ij| * ||X_j|| (``methods/wanda.py``), so D_l measures the
activation outliers the paper finds pruning must keep. The layers of one transformer block share
one ratio (the size-weighted mean of their D_l) and one density. Blocks with more outliers keep
more: the ratios are mapped linearly onto densities [d - lambda, d + lambda] (d the target), then
shifted by one constant so the kept count is the budget, each density clamped to
[d - lambda, d + lambda] and [0, 1] with the shift solved again.

Two choices differ from the authors' code (``lib/prune.py``, ``prune_wanda_outlier``), both
where it is undefined or breaks the paper's own constraint:
- the code takes one mean over the block's scores concatenated; here each layer's ratio is over
  its own mean (q_proj's and down_proj's scores differ in scale), then the block's ratio is the
  size-weighted mean of its layers' ratios;
- the code shifts without clamping, so a block can end up to 2 lambda from the target when the
  ratios are skewed; the paper states S_l in [S - lambda, S + lambda], which the clamp keeps.
  Where no clamp binds the two agree exactly. Equal ratios (the code divides by zero) give d.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from raysparse.errors import ConfigError, did_you_mean, require

OWL_OPTIONS = ("M", "lambda")  # keys of sparsity.distribution_options
_INDEX = re.compile(r"\.(\d+)\.")


def owl_options(raw: Mapping, field: str = "sparsity.distribution_options") -> dict[str, float]:
    """``{M: 5, lambda: 0.08}`` as the keyword arguments of ``owl_densities`` (``M``, ``lam``),
    checked: M > 0, lambda in [0, 1]; missing keys take the paper's defaults."""
    for key in raw:
        if key not in OWL_OPTIONS:
            raise ConfigError(f"{field}.{key}", f"unknown option {key!r} of distribution 'owl'; allowed: "
                              f"{', '.join(OWL_OPTIONS)}{did_you_mean(key, OWL_OPTIONS)}")
    M, lam = raw.get("M", 5.0), raw.get("lambda", 0.08)
    require(_is_number(M) and M > 0, f"{field}.M", M,
            "a number > 0 (an outlier scores above M times its layer's mean score; the paper uses 5)")
    require(_is_number(lam) and 0 <= lam <= 1, f"{field}.lambda", lam,
            "a number in [0, 1] (how far a layer's sparsity may move from the target; the paper uses 0.08)")
    return {"M": float(M), "lam": float(lam)}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def block_groups(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Layer name -> its block: the name up to its first numeric index (``model.layers.3.``).

    The first index, not the last: a Mixtral expert (``model.layers.3.block_sparse_moe.experts.7.w1``),
    a ResNet shortcut (``layer1.0.downsample.0``) or a T5 sub-layer (``encoder.block.3.layer.0``)
    belongs to the block of its first index. A name without an index is a group of its own.
    """
    groups = {}
    for name in names:
        match = _INDEX.search(f".{name}")
        groups[name] = name[: match.end() - 1] if match else name
    return groups


def outlier_ratio(score: torch.Tensor, M: float) -> float:
    """D_l: the fraction of |score| entries above M times their mean."""
    magnitude = score.detach().abs().float()
    return float((magnitude > M * magnitude.mean()).float().mean())


def block_outlier_ratios(
    scores: Mapping[str, torch.Tensor], M: float, groups: Mapping[str, str]
) -> dict[str, float]:
    """Block -> the size-weighted mean of its layers' ``outlier_ratio``."""
    outliers: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for name, score in scores.items():
        block = groups[name]
        outliers[block] = outliers.get(block, 0.0) + outlier_ratio(score, M) * score.numel()
        sizes[block] = sizes.get(block, 0) + score.numel()
    return {block: outliers[block] / sizes[block] for block in outliers}


def owl_densities(
    scores: Mapping[str, torch.Tensor],
    density: float,
    *,
    M: float = 5.0,
    lam: float = 0.08,
    dense_layers: frozenset[str] = frozenset(),
    groups: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Per-layer densities by OWL at global ``density`` (over all layers, dense ones included).

    ``scores`` are per weight and shaped as the weights: Wanda's |W| * ||X|| as the paper uses;
    given the weights themselves OWL reads |W|. ``groups`` maps layers to blocks (a layer it does
    not name: ``block_groups``). The layers kept dense are left out of the ratios and hold 1.0; the others
    share what is left of the budget around its mean d', each within [d' - lam, d' + lam].
    """
    dense_layers = frozenset(dense_layers)
    groups = {**block_groups(list(scores)), **(groups or {})}
    sizes = {n: s.numel() for n, s in scores.items()}
    free = [n for n in scores if n not in dense_layers]
    kept = density * sum(sizes.values()) - sum(sizes[n] for n in dense_layers)
    if kept < -0.5:
        raise ConfigError("sparsity.dense_layers", f"the layers kept dense already hold more than the target "
                          f"density {density:.1%} of the prunable weights")
    result = {n: 1.0 for n in dense_layers}
    if not free:
        return {n: result[n] for n in scores}
    free_total = sum(sizes[n] for n in free)
    target = min(max(kept / free_total, 0.0), 1.0)  # d': the mean density the free layers must have
    ratios = block_outlier_ratios({n: scores[n] for n in free}, M, groups)
    least, most = min(ratios.values()), max(ratios.values())
    if lam == 0 or most - least <= 0:
        result.update({n: target for n in free})
        return {n: result[n] for n in scores}
    # more outliers -> denser: the ratios onto [d' - lam, d' + lam], then one shift fills the budget
    base = {n: target - lam + 2 * lam * (ratios[groups[n]] - least) / (most - least) for n in free}
    low, high = max(target - lam, 0.0), min(target + lam, 1.0)

    def shifted(shift: float) -> dict[str, float]:
        return {n: min(max(b + shift, low), high) for n, b in base.items()}

    def filled(shift: float) -> float:
        return sum(d * sizes[n] for n, d in shifted(shift).items())

    # filled() rises with the shift from low * free_total (at -2 lam) to high * free_total (at 2 lam),
    # and target * free_total lies between: bisection finds the shift, as rescale_to_budget does
    below, above = -2 * lam, 2 * lam
    for _ in range(100):
        middle = (below + above) / 2
        below, above = (middle, above) if filled(middle) < target * free_total else (below, middle)
    result.update(shifted((below + above) / 2))
    return {n: result[n] for n in scores}
