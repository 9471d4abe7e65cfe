"""Timing candidates against each other: interleaved rounds (each round runs every candidate once,
so a load spike hits them all alike), medians, bounded by a time budget."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

CHUNK_SECONDS = 2e-4  # a timed chunk repeats a fast call until it lasts this long: a perf_counter read is ~1 µs


def time_interleaved(
    candidates: dict[str, Callable[[], object]], *, device: torch.device, min_rounds: int = 5,
    max_rounds: int = 15, budget_seconds: float = 0.25, drop_slower: float = 3.0,
) -> dict[str, float]:
    """Median milliseconds per call of each candidate. One that raises on its first call (a kernel
    this build or device lacks) is left out. From the second round on, a candidate more than
    ``drop_slower`` times the fastest is not timed further (a clear loser costs no more time);
    after ``min_rounds`` rounds, timing stops once ``budget_seconds`` are spent."""
    alive = {}
    for name, call in candidates.items():
        try:
            call()  # warm-up: first-call allocations, MKL's analysis of a sparse matrix
        except (RuntimeError, NotImplementedError):
            continue
        alive[name] = call
    if not alive:
        return {}
    first = next(iter(alive.values()))
    rough = max(_seconds(first, 1, device), 1e-7)
    repeats = max(1, min(100, math.ceil(CHUNK_SECONDS / rough)))
    times: dict[str, list[float]] = {name: [] for name in alive}
    started = time.perf_counter()
    for round_number in range(max_rounds):
        for name, call in alive.items():
            times[name].append(_seconds(call, repeats, device) / repeats * 1e3)
        if round_number + 1 >= min_rounds and time.perf_counter() - started > budget_seconds:
            break
        if round_number >= 1:
            best = min(statistics.median(times[n]) for n in alive)
            alive = {n: c for n, c in alive.items() if statistics.median(times[n]) <= drop_slower * best}
    return {name: statistics.median(t) for name, t in times.items()}


def _seconds(call: Callable[[], object], repeats: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    for _ in range(repeats):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - begin
