"""Sparse-training methods, one per file, on the SparseMethod interface (base.py)."""

from raysparse.methods import dense, dst, gmp, granet, hap, oneshot, rigl, set, snip, static  # noqa: F401  (register)
from raysparse.methods.base import SparseMethod, SparsityConfig
from raysparse.methods.registry import METHODS, get_method

__all__ = ["METHODS", "SparseMethod", "SparsityConfig", "get_method"]
