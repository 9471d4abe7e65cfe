"""Per-layer density allocation: given a target global density, how dense is each layer?

Every distribution has one signature::

    fn(weights: dict[str, Tensor], density: float, *, dense_layers=frozenset(), densities=None)
        -> dict[str, float]

``density`` is over all prunable weights, layers kept dense included, so the total number of
kept weights matches ``density * total`` to within rounding (one weight per layer). A
distribution with options of its own (owl's ``M`` and ``lambda``) takes them as further keywords;
``configured_distribution`` checks and binds them from ``sparsity.distribution_options``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch

from raysparse.errors import ConfigError, did_you_mean, shown, unknown_choice
from raysparse.sparsity.owl import OWL_OPTIONS, owl_densities, owl_options

Distribution = Callable[..., dict[str, float]]
DISTRIBUTIONS: dict[str, Distribution] = {}


def register(name: str) -> Callable[[Distribution], Distribution]:
    def decorator(fn: Distribution) -> Distribution:
        DISTRIBUTIONS[name] = fn
        return fn

    return decorator


def get_distribution(name: str, field: str = "sparsity.distribution") -> Distribution:
    if name not in DISTRIBUTIONS:
        raise unknown_choice(field, "distribution", name, DISTRIBUTIONS)
    return DISTRIBUTIONS[name]


def _check_feasible(sizes: Mapping[str, int], density: float, dense_layers: frozenset[str]) -> float:
    """Kept-weight budget left for the prunable (non-dense) layers."""
    total = sum(sizes.values())
    budget = density * total - sum(sizes[n] for n in dense_layers)
    if budget < -0.5:
        dense_share = sum(sizes[n] for n in dense_layers) / total
        raise ConfigError(
            "sparsity.dense_layers",
            f"the layers kept dense already hold {dense_share:.1%} of the prunable weights, "
            f"more than the target density {density:.1%}",
        )
    return max(budget, 0.0)


def _scaled(
    raw: Mapping[str, float], sizes: Mapping[str, int], density: float, dense: frozenset[str]
) -> dict[str, float]:
    """Solve eps so that sum(eps * raw_l * n_l) fills the budget; layers that would exceed
    density 1 become dense and eps is solved again (the ERK rule of Evci et al. / GraNet)."""
    dense = set(dense)
    while True:
        budget = _check_feasible(sizes, density, frozenset(dense))
        free = [n for n in sizes if n not in dense]
        denominator = sum(raw[n] * sizes[n] for n in free)
        eps = budget / denominator if denominator > 0 else 0.0
        overflow = [n for n in free if eps * raw[n] > 1.0]
        if not overflow:
            break
        dense.update(overflow)
    return {n: 1.0 if n in dense else eps * raw[n] for n in sizes}


def _sizes(weights: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return {n: w.numel() for n, w in weights.items()}


@register("uniform")
def uniform(weights, density, *, dense_layers=frozenset(), densities=None):
    """The same density for every prunable layer (adjusted for the layers kept dense)."""
    return _scaled({n: 1.0 for n in weights}, _sizes(weights), density, frozenset(dense_layers))


@register("er")
def erdos_renyi(weights, density, *, dense_layers=frozenset(), densities=None):
    """Erdos-Renyi (Mocanu et al. 2018): density proportional to (n_in + n_out) / (n_in * n_out)."""
    raw = {n: (w.shape[0] + w.shape[1]) / (w.shape[0] * w.shape[1]) for n, w in weights.items()}
    return _scaled(raw, _sizes(weights), density, frozenset(dense_layers))


@register("erk")
def erdos_renyi_kernel(weights, density, *, dense_layers=frozenset(), densities=None):
    """ERK (Evci et al. 2020, RigL): density proportional to sum(dims) / prod(dims)."""
    raw = {n: sum(w.shape) / math.prod(w.shape) for n, w in weights.items()}
    return _scaled(raw, _sizes(weights), density, frozenset(dense_layers))


@register("global")
def global_magnitude(weights, density, *, dense_layers=frozenset(), densities=None):
    """One magnitude threshold across all layers: the densities that global top-k implies.

    Pruned weights are zero (masks are applied), so they rank last and stay pruned.
    """
    dense_layers = frozenset(dense_layers)
    sizes = _sizes(weights)
    keep = round(_check_feasible(sizes, density, dense_layers))
    free = [n for n in weights if n not in dense_layers]
    result = {n: 1.0 for n in dense_layers}
    if not free:
        return result
    scores = torch.cat([weights[n].detach().abs().flatten().float().cpu() for n in free])
    keep = min(keep, scores.numel())
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep > 0:
        # topk breaks ties deterministically, so the count is exact even with many zeros
        chosen[torch.topk(scores, keep, sorted=False).indices] = True
    offset = 0
    for n in free:
        result[n] = int(chosen[offset : offset + sizes[n]].sum()) / sizes[n]
        offset += sizes[n]
    return {n: result[n] for n in weights}


@register("explicit")
def explicit(weights, density, *, dense_layers=frozenset(), densities=None):
    """Densities given per layer (the per-layer search). Layers not listed share the rest of
    the budget uniformly, so the total still hits ``density`` when that is feasible."""
    if not densities:
        raise ConfigError("sparsity.layer_densities", "distribution 'explicit' needs a dict layer -> density")
    unknown = sorted(set(densities) - set(weights))
    if unknown:
        raise ConfigError(
            "sparsity.layer_densities",
            f"{unknown[0]!r} is not a prunable layer; layers are: {', '.join(weights)}",
        )
    for name, value in densities.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"sparsity.layer_densities.{name}", f"density must be in [0, 1], got {value!r}")
    fixed = {n: float(v) for n, v in densities.items()}
    fixed.update({n: 1.0 for n in dense_layers})
    rest = {n: w for n, w in weights.items() if n not in fixed}
    if rest:
        sizes = _sizes(weights)
        budget = density * sum(sizes.values()) - sum(fixed[n] * sizes[n] for n in fixed)
        share = min(max(budget / sum(sizes[n] for n in rest), 0.0), 1.0)
        fixed.update({n: share for n in rest})
    return {n: fixed[n] for n in weights}


@register("owl")
def outlier_weighed(weights, density, *, dense_layers=frozenset(), densities=None, M=5.0, lam=0.08):
    """OWL (Yin et al. 2024, https://arxiv.org/abs/2310.05175): blocks with more activation
    outliers keep more weights. ``weights`` are the method's scores (Wanda's |W| * ||X||); given
    weights it reads |W|. Options ``M`` and ``lambda``: ``sparsity/owl.py``."""
    return owl_densities(weights, density, M=M, lam=lam, dense_layers=frozenset(dense_layers))


# the distributions that read the scores given them, not only their shapes: a method that
# calibrates (wanda, sparsegpt) gives them |W| * ||X||
READS_SCORES = frozenset({"global", "owl"})

# the distributions that take options (sparsity.distribution_options): name -> (keys, check)
DISTRIBUTION_OPTIONS: dict[str, tuple[tuple[str, ...], Callable[[Mapping, str], dict]]] = {
    "owl": (OWL_OPTIONS, owl_options),
}


def configured_distribution(
    name: str, options: Mapping | None = None, field: str = "sparsity.distribution"
) -> Distribution:
    """``get_distribution(name)`` with its options bound (``{M: 5, lambda: 0.08}`` for 'owl').

    Every key is checked, also one that ``name`` does not take: a sweep that samples the
    distribution has one options block for all of them, so another distribution's keys are
    accepted and unused (as another method's keys are in the ``sparsity:`` block).
    """
    distribution = get_distribution(name, field)
    options_field = f"{field}_options"
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(options_field, f"got {shown(options)}; allowed: a mapping option -> value, "
                          "e.g. {M: 5, lambda: 0.08} for distribution 'owl'")
    owners = {key: owner for owner, (keys, _) in DISTRIBUTION_OPTIONS.items() for key in keys}
    for key in options:
        if key not in owners:
            allowed = ", ".join(f"{k} ({owner})" for k, owner in owners.items())
            raise ConfigError(f"{options_field}.{key}",
                              f"unknown option {shown(key)}; allowed: {allowed}{did_you_mean(key, owners)}")
    bound = {}
    for owner, (keys, check) in DISTRIBUTION_OPTIONS.items():
        checked = check({k: v for k, v in options.items() if k in keys}, options_field)
        if owner == name:
            bound = checked
    return functools.partial(distribution, **bound) if bound else distribution


def kept_counts(layer_density: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, int]:
    """Weights to keep per layer, their total the budget's exact count (``sum d_l * n_l``,
    rounded once): each layer keeps the floor of its share, and the layers whose shares have the
    largest remainders one more (largest-remainder rounding; ties to the earlier layer)."""
    shares = {n: min(max(float(layer_density[n]), 0.0), 1.0) * sizes[n] for n in layer_density}
    counts = {n: math.floor(share + 1e-9) for n, share in shares.items()}
    extra = round(sum(shares.values())) - sum(counts.values())
    by_remainder = sorted((n for n in shares if counts[n] < sizes[n]), key=lambda n: counts[n] - shares[n])
    for name in by_remainder[:max(extra, 0)]:
        counts[name] += 1
    return counts


def cap_densities(
    densities: Mapping[str, float], sizes: Mapping[str, int], caps: Mapping[str, float],
    fixed: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Densities at most ``caps`` (N/M on a layer under an N:M pattern; 1 where not given).

    A layer above its cap is set to it and the weights it cannot keep go to the layers below
    their caps, in proportion to their densities (the ERK rule for layers above 1, applied to
    any distribution), until none is above; ``fixed`` layers (given explicitly) never grow. The
    total still hits the budget unless the layers below their caps cannot hold the rest.
    """
    result = dict(densities)
    while True:
        over = [n for n, d in result.items() if d > caps.get(n, 1.0) + 1e-12]
        if not over:
            return result
        excess = sum((result[n] - caps[n]) * sizes[n] for n in over)
        result.update({n: caps[n] for n in over})
        free = [n for n, d in result.items() if n not in fixed and 0 < d < caps.get(n, 1.0)]
        room = sum(result[n] * sizes[n] for n in free)
        if room <= 0:
            return result
        result.update({n: result[n] * (1 + excess / room) for n in free})


def rescale_to_budget(
    raw: Mapping[str, float], sizes: Mapping[str, int], kept: float, bounds: tuple[float, float] = (0.0, 1.0)
) -> dict[str, float]:
    """Densities ``clip(c * raw_l, low, high)`` with the one scale ``c`` (bisection) that makes
    ``sum(d_l * n_l) == kept``: the per-layer search proposes relative densities and every trial
    still has exactly the target number of weights."""
    low, high = bounds
    total = sum(sizes[n] for n in raw)
    if not low * total - 0.5 <= kept <= high * total + 0.5:
        raise ValueError(f"{kept:.0f} kept weights cannot be spread over {total} with densities in {bounds}")

    def densities(scale: float) -> dict[str, float]:
        return {n: min(max(scale * r, low), high) for n, r in raw.items()}

    def filled(scale: float) -> float:
        return sum(d * sizes[n] for n, d in densities(scale).items())

    lo, hi = 0.0, 1.0
    while filled(hi) < kept and hi < 1e12:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if filled(mid) < kept else (lo, mid)
    return densities(hi)
