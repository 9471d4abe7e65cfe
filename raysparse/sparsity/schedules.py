"""Pure schedules: sparsity over training and the decay of the regrowth ratio.

No state, no torch: each is a formula of the step, tested against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def gmp_sparsity(
    step: int,
    *,
    initial: float,
    final: float,
    start: int,
    end: int,
    frequency: int = 1,
    exponent: float = 3,
) -> float:
    """Gradual pruning (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878).

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** p for t0 <= t <= t_end, where t
    only advances every ``frequency`` steps (the sparsity is held between pruning steps);
    ``initial`` before t0 and ``final`` after t_end.
    """
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1, got frequency={frequency}")
    if end < start:
        raise ValueError(f"end must be >= start, got start={start}, end={end}")
    if step < start:
        return initial
    if step >= end:
        return final
    t = start + (step - start) // frequency * frequency
    progress = (t - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** exponent


def is_gmp_update_step(step: int, *, start: int, end: int, frequency: int) -> bool:
    """True on the steps where the GMP schedule moves: t0, t0 + dt, ..., and t_end."""
    return start <= step <= end and ((step - start) % frequency == 0 or step == end)


def cosine_decay(step: int, *, total: int, initial: float, floor: float) -> float:
    """r_t = r_min + (r_0 - r_min) * (1 + cos(pi * t / T)) / 2 (GraNet's death-rate decay)."""
    t = min(max(step, 0), total)
    return floor + (initial - floor) * (1.0 + math.cos(math.pi * t / max(total, 1))) / 2.0


def linear_decay(step: int, *, total: int, initial: float, floor: float) -> float:
    """r_t = r_0 - (r_0 - r_min) * t / T."""
    t = min(max(step, 0), total)
    return initial - (initial - floor) * t / max(total, 1)


def constant(step: int, *, total: int, initial: float, floor: float) -> float:
    return initial


REGROWTH_DECAYS: dict[str, Callable[..., float]] = {
    "cosine": cosine_decay,
    "linear": linear_decay,
    "constant": constant,
}
