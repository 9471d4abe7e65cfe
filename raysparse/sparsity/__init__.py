"""Masks, per-layer distributions, schedules and scores: pure torch, no service imports."""

from raysparse.sparsity.distributions import DISTRIBUTIONS, get_distribution
from raysparse.sparsity.masks import MaskEvent, MaskSet, masks_hash, pack_masks, prunable_weights, unpack_masks
from raysparse.sparsity.patterns import layer_patterns, parse_pattern
from raysparse.sparsity.schedules import REGROWTH_DECAYS, cosine_decay, gmp_sparsity, linear_decay

__all__ = [
    "DISTRIBUTIONS", "REGROWTH_DECAYS", "MaskEvent", "MaskSet", "cosine_decay", "get_distribution",
    "gmp_sparsity", "layer_patterns", "linear_decay", "masks_hash", "pack_masks", "parse_pattern", "prunable_weights",
    "unpack_masks",
]
