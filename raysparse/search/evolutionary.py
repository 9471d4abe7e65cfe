"""``sampler: evolutionary``: a per-layer sparsity search in the spirit of EvoPress (Sieberling et
al. 2025, https://arxiv.org/abs/2410.14649), as an Optuna sampler over ``layer_sparsity``'s levels.

The first trials are the heuristics' allocations (``starts``: uniform, every group at the sweep's
target density, then OWL's where the pruner's scores give one; the same starts TPE gets). Every
later trial is a child of the best finished trial so far (the objective's direction; a (1 + λ)
strategy, λ the trials in flight): 1 to ``max_moves`` moves, each taking ``step`` times the
target density from one group and giving the same number of weights to another (so a move keeps
the budget: a group of half the size gets twice the density), both kept within ``bounds``. A
trial still rescales its levels to the exact budget (``layerwise.apply_layer_densities``); after
such a move that rescale changes nothing but rounding. Unlike TPE, which proposes each level
independently and then rescales, every proposal here is one small, budget-neutral change of a
good allocation, which is why it works in 30 or more dimensions on tens of trials.

Only the levels evolve: a sweep with other ``space`` keys is refused before start (search those
with ``tpe``, or fix them in ``base``).
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from raysparse.search.layerwise import PARAM_PREFIX


class EvolutionarySampler(optuna.samplers.BaseSampler):
    def __init__(self, group_sizes: dict[str, int], density: float, bounds: tuple[float, float], *,
                 seed: int = 0, step: float = 0.1, max_moves: int = 3, starts: list[dict[str, float]] = ()):
        """``group_sizes``: weights per searched group (its ``layer.<group>`` level); ``density``:
        the kept fraction of those weights the budget allows (the uniform level); ``starts``:
        level dicts (``layer.<group>`` -> level) the first trials take after the uniform one."""
        self.sizes = {PARAM_PREFIX + g: int(n) for g, n in group_sizes.items()}
        self.density, self.bounds = float(density), (float(bounds[0]), float(bounds[1]))
        self.step, self.max_moves = step * self.density, max(1, int(max_moves))
        self._rng = np.random.RandomState(seed)
        self._planned: dict[int, dict[str, float]] = {}
        uniform = {k: self.density for k in self.sizes}
        self._starts = [uniform] + [{**uniform, **start} for start in starts if start != uniform]

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.number < len(self._starts):
            self._planned[trial.number] = dict(self._starts[trial.number])
            return
        parent = self._best(study)
        levels = self._starts[0] if parent is None else self.mutate(self._levels(parent))
        self._planned[trial.number] = levels

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution):
        planned = self._planned.get(trial.number, {})
        if param_name not in planned:
            raise ValueError(f"sampler: evolutionary evolves layer_sparsity levels only, not {param_name!r}")
        low, high = param_distribution.low, param_distribution.high
        return float(min(max(planned[param_name], low), high))

    def after_trial(self, study, trial, state, values) -> None:
        self._planned.pop(trial.number, None)

    def mutate(self, levels: dict[str, float]) -> dict[str, float]:
        """1..max_moves budget-neutral moves: ``step`` density out of one group, the same number of
        weights into another, each amount cut so that both stay within the bounds."""
        child = dict(levels)
        names = list(child)
        if len(names) < 2:
            return child
        low, high = self.bounds
        for _ in range(self._rng.randint(1, self.max_moves + 1)):
            giver, taker = self._rng.choice(len(names), size=2, replace=False)
            giver, taker = names[giver], names[taker]
            moved = min(self.step * self.sizes[giver], (child[giver] - low) * self.sizes[giver],
                        (high - child[taker]) * self.sizes[taker])  # weights
            if moved <= 0:
                continue
            child[giver] -= moved / self.sizes[giver]
            child[taker] += moved / self.sizes[taker]
        return child

    def _levels(self, trial: FrozenTrial) -> dict[str, float]:
        return {k: float(trial.params.get(k, self.density)) for k in self.sizes}

    @staticmethod
    def _best(study: optuna.Study) -> FrozenTrial | None:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        if not done:
            return None
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        return min(done, key=lambda t: (sign * t.value, t.number))
