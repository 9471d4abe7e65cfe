"""Population Based Training over sparse schedules: Ray Tune's PopulationBasedTraining, fed from a
sweep's space.

Ray Tune 2.60 refuses a search algorithm next to PBT (``PopulationBasedTraining.on_trial_add``
raises for any SearchGenerator, OptunaSearch included), so the first population is sampled by
Tune's BasicVariantGenerator over the same domains, seeded with the sweep's seed. Every
``interval`` epochs a trial in the bottom ``quantile_fraction`` restarts from the checkpoint of
one in the top fraction (weights, optimizer state and masks) with the ``mutate`` keys perturbed
(x0.8 / x1.2, or resampled; a choice moves to a neighbour), clipped to the space's bounds.
"""

from __future__ import annotations

import random

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from raysparse.search.domains import Domain
from raysparse.search.spaces import Sweep


def tune_domain(domain: Domain):
    """The Tune search-space object for one of our domains (choices by their Optuna categories)."""
    if domain.kind == "choice":
        return tune.choice(domain.categories())
    low, high = domain.values
    if domain.kind == "int":
        return tune.randint(low, high + 1)  # Tune's upper bound is exclusive
    return tune.loguniform(low, high) if domain.kind == "loguniform" else tune.uniform(low, high)


def pbt_param_space(sweep: Sweep) -> dict:
    """Tune's ``param_space``: keyed by the space's dotted keys, as ``Sweep.trial_config`` reads them."""
    return {key: tune_domain(domain) for key, domain in sweep.space.items()}


def pbt_searcher(sweep: Sweep) -> BasicVariantGenerator:
    return BasicVariantGenerator(random_state=sweep.seed)


def pbt_scheduler(sweep: Sweep) -> PopulationBasedTraining:
    settings = sweep.early_stopping
    mutations = {}
    for key in settings.mutate:
        domain = sweep.space[key]
        mutations[key] = domain.categories() if domain.kind == "choice" else tune_domain(domain)
    return SparsePBT(
        epochs=sweep.base.get("epochs", 30), seed=sweep.seed,
        time_attr="epoch", metric=sweep.metric, mode=sweep.mode, perturbation_interval=settings.interval,
        hyperparam_mutations=mutations, quantile_fraction=settings.quantile_fraction,
        custom_explore_fn=ClipToSpace({k: sweep.space[k] for k in settings.mutate}),
    )


class ClipToSpace:
    """PBT multiplies a number by 0.8 or 1.2 without looking at its bounds: a regrowth ratio of
    0.9 would become 1.08, an invalid config. Perturbed values are put back inside the domain
    (integers rounded). A class, not a closure: Tune pickles the scheduler."""

    def __init__(self, domains: dict[str, Domain]):
        self.domains = domains

    def __call__(self, config: dict) -> dict:
        for key, domain in self.domains.items():
            if domain.kind == "choice" or key not in config:
                continue
            low, high = domain.values
            value = min(max(config[key], low), high)
            config[key] = int(round(value)) if domain.kind == "int" else float(value)
        return config


class SparsePBT(PopulationBasedTraining):
    """Tune's PBT with two changes: the last epoch is never a perturbation (a trial ends by
    logging its final masks and model, not by being paused), and PBT's random draws (which
    trial to copy, how to perturb) come from a stream seeded by the sweep, leaving the driver's
    global ``random`` as it was."""

    def __init__(self, *, epochs: int, seed: int, **options):
        super().__init__(**options)
        self._epochs = epochs
        self._random_state = random.Random(seed).getstate()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("epoch", 0) >= self._epochs:
            return TrialScheduler.CONTINUE
        outer = random.getstate()
        random.setstate(self._random_state)
        try:
            return super().on_trial_result(tune_controller, trial, result)
        finally:
            self._random_state = random.getstate()
            random.setstate(outer)
