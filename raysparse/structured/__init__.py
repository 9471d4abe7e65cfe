"""Structured (channel-level) pruning: channel sensitivities and the methods that rank by them."""

from raysparse.structured.hessian import channel_hessian_traces

__all__ = ["channel_hessian_traces"]
