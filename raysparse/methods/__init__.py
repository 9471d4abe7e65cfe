"""Sparse-training methods, one per file, on the SparseMethod interface (base.py)."""

from raysparse.methods import dense, dst, gmp, granet, hap, oneshot, rigl, set, snip, sparsegpt, static, wanda  # noqa: F401  (register)
from raysparse.methods.base import MethodOptions, Restructure, SparseMethod, SparsityConfig
from raysparse.methods.registry import METHODS, get_method, known_methods, register_method

__all__ = [
    "METHODS", "MethodOptions", "Restructure", "SparseMethod", "SparsityConfig", "get_method", "known_methods",
    "register_method",
]
