"""``sampler: evolutionary``: budget-neutral moves between layer_sparsity's levels, children of the
best trial so far; the first trial is the uniform allocation."""

import optuna
import pytest

from raysparse.errors import ConfigError
from raysparse.search.evolutionary import EvolutionarySampler
from raysparse.search.spaces import load_sweep
from tests.search.test_layerwise import llama_sweep

SIZES = {"a": 100, "b": 200, "c": 400, "d": 800}


def kept(levels: dict) -> float:
    return sum(levels["layer." + g] * n for g, n in SIZES.items())


def study_with(sampler, objective, trials):
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.optimize(lambda t: objective({k: t.suggest_float(k, 0.1, 0.9) for k in ("layer." + g for g in SIZES)}),
                   n_trials=trials)
    return study


def test_the_first_trial_is_uniform_and_every_child_keeps_the_budget_within_bounds():
    sampler = EvolutionarySampler(SIZES, 0.4, (0.1, 0.9), seed=3, step=0.5)
    study = study_with(sampler, lambda levels: -levels["layer.a"], 30)  # pushes weights into 'a' up to its bound
    first = study.trials[0].params
    assert set(first.values()) == {0.4}
    for trial in study.trials:
        assert kept(trial.params) == pytest.approx(0.4 * sum(SIZES.values()))
        assert all(0.1 - 1e-12 <= v <= 0.9 + 1e-12 for v in trial.params.values())
    assert study.best_trial.params["layer.a"] > 0.4  # selection follows the objective


def test_a_child_differs_from_the_best_trial_by_a_few_moves():
    sampler = EvolutionarySampler(SIZES, 0.4, (0.1, 0.9), seed=0, max_moves=1)
    study = study_with(sampler, lambda levels: sum((v - 0.4) ** 2 for v in levels.values()), 12)
    for trial in study.trials[1:]:
        best_before = min(study.trials[: trial.number], key=lambda t: (t.value, t.number))
        changed = [k for k, v in trial.params.items() if v != pytest.approx(best_before.params[k])]
        assert len(changed) in (0, 2)  # one move: one giver, one taker (or none, both at a bound)


def test_the_same_seed_proposes_the_same_allocations():
    def proposals(seed):
        study = study_with(EvolutionarySampler(SIZES, 0.4, (0.1, 0.9), seed=seed), lambda lv: lv["layer.b"], 8)
        return [t.params for t in study.trials]

    assert proposals(1) == proposals(1) and proposals(1) != proposals(2)


@pytest.mark.parametrize("change, field", [
    ({"layer_sparsity": None}, "sampler"),
    ({"space": {"seed": {"choice": [0, 1]}}}, "space.seed"),
    ({"objectives": {"val_perplexity": "min", "density": "min"}}, "objectives"),
])
def test_what_the_evolutionary_sampler_cannot_search_is_one_line_before_start(text_file, change, field):
    raw = llama_sweep(text_file, group="block").raw
    raw = {**raw, "sampler": "evolutionary", **change}
    if raw["layer_sparsity"] is None:
        del raw["layer_sparsity"]
    with pytest.raises(ConfigError) as caught:
        load_sweep(raw)
    assert caught.value.field == field


def test_the_heuristics_starts_come_after_the_uniform_trial():
    owl = {"layer.a": 0.6, "layer.b": 0.5, "layer.c": 0.4, "layer.d": 0.35}  # the same budget
    sampler = EvolutionarySampler(SIZES, 0.4, (0.1, 0.9), seed=0, starts=[owl])
    study = study_with(sampler, lambda levels: levels["layer.d"], 4)
    assert set(study.trials[0].params.values()) == {0.4}
    assert study.trials[1].params == pytest.approx(owl)
    assert kept(study.trials[1].params) == pytest.approx(0.4 * sum(SIZES.values()))


def test_cmaes_takes_one_objective(text_file):
    raw = {**llama_sweep(text_file, group="block").raw, "sampler": "cmaes"}
    assert load_sweep(raw).sampler == "cmaes"
    with pytest.raises(ConfigError) as caught:
        load_sweep({**raw, "objectives": {"val_perplexity": "min", "density": "min"}})
    assert caught.value.field == "objectives"
