"""Per-layer sparsity search.

The scheme: the sampler proposes one density per prunable layer, ``layer.<name>`` within
``bounds`` (or one per group of layers, ``group``: ``block``, the layers of one transformer
block; ``type``, one matrix type across the blocks, e.g. every block's ``q_proj``); each trial
rescales them with one common factor (clipped to the bounds) so the total number of kept weights
hits the trial's ``final_sparsity`` exactly, and trains with ``distribution: explicit``. Why:
every trial then has the same parameter budget, so the search compares *allocations* and cannot
win by simply being denser; the bounds keep a layer from collapsing (a layer at density 0
disconnects the network). Searching the distribution itself (``sparsity.distribution: {choice:
[uniform, er, erk]}``) is an ordinary space key.
"""

from __future__ import annotations

import re
from typing import Any

from raysparse.config import get_dotted
from raysparse.errors import ConfigError, unknown_choice
from raysparse.search.spaces import LayerSparsity
from raysparse.sparsity.distributions import rescale_to_budget
from raysparse.sparsity.owl import block_groups

PARAM_PREFIX = "layer."


def parse_layer_sparsity(raw: Any, base: dict, space: dict) -> LayerSparsity | None:
    if not raw:  # present but empty: a forgotten block, not a request for defaults
        raise ConfigError("layer_sparsity", f"got an empty block {raw!r}; give bounds: [low, high] (and layers)")
    if not isinstance(raw, dict):
        raise ConfigError("layer_sparsity", f"expected a mapping like {{bounds: [0.02, 1.0]}}, got {raw!r}")
    allowed = ("bounds", "layers", "group")
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"layer_sparsity.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    bounds = raw.get("bounds", [0.01, 1.0])
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
            and 0 <= bounds[0] < bounds[1] <= 1):
        raise ConfigError("layer_sparsity.bounds", f"got {bounds!r}; allowed: [low, high] with 0 <= low < high <= 1")
    _check_bounds_hold_patterns(bounds, base, space)
    sizes, dense = _layer_sizes(base)
    patterns = raw.get("layers", ["*"])
    if not isinstance(patterns, list) or not patterns:
        raise ConfigError("layer_sparsity.layers", f"got {patterns!r}; allowed: a non-empty list of layer patterns")
    import fnmatch

    searched = {n: s for n, s in sizes.items() if n not in dense and any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not searched:
        raise ConfigError("layer_sparsity.layers", f"{patterns!r} match no prunable layer; layers: {', '.join(sizes)}")
    group = raw.get("group", "matrix")
    if group not in GROUPINGS:
        raise unknown_choice("layer_sparsity.group", "grouping", group, GROUPINGS)
    layer_sparsity = LayerSparsity(layers=searched, bounds=(float(bounds[0]), float(bounds[1])),
                                   groups=None if group == "matrix" else GROUPINGS[group](list(searched)))
    for sparsity in _final_sparsities(base, space):
        kept = _kept_budget(1 - sparsity, sizes, dense, searched)
        total = sum(searched.values())
        if not bounds[0] * total <= kept <= bounds[1] * total:
            raise ConfigError(
                "layer_sparsity.bounds",
                f"{bounds!r} cannot reach final_sparsity {sparsity:g}: the searched layers need an average "
                f"density of {kept / total:.3f}",
            )
    return layer_sparsity


def _check_bounds_hold_patterns(bounds: list, base: dict, space: dict) -> None:
    """An N:M layer holds at most N/M: a proposal above it would make an invalid trial config."""
    from raysparse.sparsity.patterns import parse_pattern

    domain = space.get("sparsity.pattern")
    for text in domain.probe_values() if domain is not None else [get_dotted(base, "sparsity.pattern", "unstructured")]:
        try:
            most = parse_pattern(text).max_density
        except ConfigError:
            continue  # a bad pattern: the space's own check names it, as space.sparsity.pattern
        if bounds[1] > most + 1e-9:
            raise ConfigError("layer_sparsity.bounds", f"got {bounds!r}; allowed: an upper bound <= {most:g} with "
                              f"sparsity.pattern {text!r} (at most that density in a layer)")


def apply_layer_densities(config: dict, params: dict, layer_sparsity: LayerSparsity) -> None:
    """Turn a trial's ``layer.<name>`` proposals into explicit densities at the exact target."""
    sparsity = config.setdefault("sparsity", {})
    sizes, dense = _layer_sizes(config)
    raw = {n: params[PARAM_PREFIX + layer_sparsity.group_of(n)] for n in layer_sparsity.layers}
    kept = _kept_budget(1 - sparsity.get("final_sparsity", 0.9), sizes, dense, layer_sparsity.layers)
    sparsity["distribution"] = "explicit"
    sparsity["layer_densities"] = rescale_to_budget(raw, layer_sparsity.layers, kept, layer_sparsity.bounds)


def searched_levels(base: dict, layer_sparsity: LayerSparsity) -> tuple[dict[str, int], float]:
    """Weights per searched group, and the density every group has under a uniform allocation
    at ``base``'s ``final_sparsity`` (the kept budget over the searched weights)."""
    sizes, dense = _layer_sizes(base)
    groups: dict[str, int] = {}
    for name, size in layer_sparsity.layers.items():
        group = layer_sparsity.group_of(name)
        groups[group] = groups.get(group, 0) + size
    kept = _kept_budget(1 - get_dotted(base, "sparsity.final_sparsity", 0.9), sizes, dense, layer_sparsity.layers)
    return groups, kept / sum(groups.values())


def levels_of(allocation: dict[str, float], layer_sparsity: LayerSparsity) -> dict[str, float]:
    """A per-layer allocation (OWL's) as the search's levels: each group's kept weights over its
    weights (exact where the group's layers share one density, as OWL's blocks do)."""
    kept: dict[str, float] = {}
    total: dict[str, int] = {}
    for name, size in layer_sparsity.layers.items():
        group = PARAM_PREFIX + layer_sparsity.group_of(name)
        kept[group] = kept.get(group, 0.0) + allocation[name] * size
        total[group] = total.get(group, 0) + size
    low, high = layer_sparsity.bounds
    return {g: min(max(kept[g] / total[g], low), high) for g in kept}


def suggest_layer_densities(trial, layer_sparsity: LayerSparsity) -> None:
    low, high = layer_sparsity.bounds
    for group in dict.fromkeys(map(layer_sparsity.group_of, layer_sparsity.layers)):
        trial.suggest_float(PARAM_PREFIX + group, low, high)


def by_type(names: list[str]) -> dict[str, str]:
    """Layer -> its matrix type: the name with its block indices as ``_`` (every block's
    ``model.layers._.self_attn.q_proj.weight`` is one type)."""
    return {name: _BLOCK_INDEX.sub(r"\1_", name) for name in names}


def by_block(names: list[str]) -> dict[str, str]:
    """Layer -> its transformer block, ``model.layers.3`` (the name up to its first index)."""
    return {name: block.rstrip(".") for name, block in block_groups(names).items()}


_BLOCK_INDEX = re.compile(r"(^|\.)\d+(?=\.)")
# how layers share one searched level: each its own, one per transformer block, one per matrix type
GROUPINGS = {"matrix": None, "block": by_block, "type": by_type}


def _kept_budget(density: float, sizes: dict[str, int], dense: frozenset[str], searched: dict[str, int]) -> float:
    """Weights the searched layers may keep: the global target minus the layers kept dense and
    minus the other unsearched layers at the global density (``explicit`` gives them that share)."""
    others = sum(s for n, s in sizes.items() if n not in searched and n not in dense)
    return density * sum(sizes.values()) - sum(sizes[n] for n in dense) - density * others


def _final_sparsities(base: dict, space: dict) -> list[float]:
    domain = space.get("sparsity.final_sparsity")
    if domain is not None:
        return [float(v) for v in domain.probe_values()]
    return [float(get_dotted(base, "sparsity.final_sparsity", 0.9))]


_SIZES_CACHE: dict[str, tuple[dict[str, int], frozenset[str]]] = {}


def _layer_sizes(config: dict) -> tuple[dict[str, int], frozenset[str]]:
    """Prunable layers of the config's model (built once on CPU) and those kept dense."""
    import json

    from raysparse.config import load_config
    from raysparse.sparsity.masks import prunable_weights, resolve_dense_layers
    from raysparse.tasks import build_task
    from raysparse.zoo.user_code import build_network, build_splits

    key = json.dumps([config.get("model"), config.get("data"), config.get("sparsity", {}).get("dense_layers")],
                     sort_keys=True, default=str)
    if key not in _SIZES_CACHE:
        cfg = load_config(config)
        # the zoo's or the user's factories, as a trial builds them (the data describes itself)
        data = build_splits(cfg.data, cfg.seed, build_task(cfg.task, label_smoothing=cfg.label_smoothing))
        weights = prunable_weights(build_network(cfg.model, data.info),
                                   include=cfg.sparsity.include, exclude=cfg.sparsity.exclude)
        dense = resolve_dense_layers(list(weights), cfg.sparsity.dense_layers)
        _SIZES_CACHE[key] = ({n: w.numel() for n, w in weights.items()}, dense)
    return _SIZES_CACHE[key]
