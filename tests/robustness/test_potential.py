import pandas as pd
import pytest

from raysparse.errors import ConfigError
from raysparse.robustness.potential import potential_table, prune_potential

# a hand-built table: reference accuracy 0.90 (clean) and 0.70 (noise); delta 0.5 points
ROWS = [
    {"method": "dense", "sparsity": 0.0, "distribution": "clean", "accuracy": 0.90},
    {"method": "dense", "sparsity": 0.0, "distribution": "noise", "accuracy": 0.70},
    {"method": "gmp", "sparsity": 0.5, "distribution": "clean", "accuracy": 0.902},
    {"method": "gmp", "sparsity": 0.8, "distribution": "clean", "accuracy": 0.896},  # within 0.005
    {"method": "gmp", "sparsity": 0.9, "distribution": "clean", "accuracy": 0.880},  # out
    {"method": "gmp", "sparsity": 0.5, "distribution": "noise", "accuracy": 0.690},  # out
    {"method": "gmp", "sparsity": 0.8, "distribution": "noise", "accuracy": 0.600},  # out
    {"method": "granet", "sparsity": 0.9, "distribution": "clean", "accuracy": 0.899},
    {"method": "granet", "sparsity": 0.9, "distribution": "clean", "accuracy": 0.897},  # mean 0.898: in
    {"method": "granet", "sparsity": 0.95, "distribution": "clean", "accuracy": 0.870},
    {"method": "granet", "sparsity": 0.5, "distribution": "noise", "accuracy": 0.696},  # in
]


def test_prune_potential_by_hand():
    got = prune_potential(ROWS)
    assert got == {
        ("gmp", "clean"): 0.8, ("gmp", "noise"): 0.0,
        ("granet", "clean"): 0.9, ("granet", "noise"): 0.5,
    }


def test_delta_and_dataframe_input():
    frame = pd.DataFrame(ROWS)
    assert prune_potential(frame, delta=0.03)[("gmp", "clean")] == 0.9
    assert prune_potential(frame, delta=0.0)[("gmp", "clean")] == 0.5


def test_table_is_distribution_by_method():
    table = potential_table(prune_potential(ROWS))
    assert list(table.index) == ["clean", "noise"] and list(table.columns) == ["gmp", "granet"]
    assert table.loc["noise", "granet"] == 0.5


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="results: missing columns"):
        prune_potential([{"method": "x", "sparsity": 0.5}])
    with pytest.raises(ConfigError, match="no dense reference .* 'fog'"):
        prune_potential(ROWS + [{"method": "gmp", "sparsity": 0.5, "distribution": "fog", "accuracy": 0.5}])


# a min metric by hand: dense perplexity 10.0 (clean) and 40.0 (shift.other); with delta 0.05 a
# sparsity qualifies at perplexity <= 10.0 * 1.05 = 10.5 (clean) and <= 40.0 * 1.05 = 42.0 (shift.other)
PERPLEXITY_ROWS = [
    {"method": "dense", "sparsity": 0.0, "distribution": "clean", "value": 10.0},
    {"method": "dense", "sparsity": 0.0, "distribution": "shift.other", "value": 40.0},
    {"method": "gmp", "sparsity": 0.5, "distribution": "clean", "value": 10.3},  # in
    {"method": "gmp", "sparsity": 0.8, "distribution": "clean", "value": 10.5},  # in: exactly on the bound
    {"method": "gmp", "sparsity": 0.9, "distribution": "clean", "value": 10.6},  # out
    {"method": "gmp", "sparsity": 0.5, "distribution": "shift.other", "value": 41.0},  # in
    {"method": "gmp", "sparsity": 0.8, "distribution": "shift.other", "value": 43.0},  # out
    {"method": "granet", "sparsity": 0.9, "distribution": "clean", "value": 10.4},
    {"method": "granet", "sparsity": 0.9, "distribution": "clean", "value": 10.8},  # mean 10.6: out
    {"method": "granet", "sparsity": 0.95, "distribution": "clean", "value": 9.9},  # below dense: in
    {"method": "granet", "sparsity": 0.95, "distribution": "shift.other", "value": 50.0},  # out
]
PERPLEXITY_ROWS = [{**row, "metric": "perplexity", "direction": "min"} for row in PERPLEXITY_ROWS]


def test_prune_potential_of_a_min_metric_by_hand():
    assert prune_potential(PERPLEXITY_ROWS, delta=0.05) == {
        ("gmp", "clean"): 0.8, ("gmp", "shift.other"): 0.5,
        ("granet", "clean"): 0.95, ("granet", "shift.other"): 0.0,
    }


def test_a_min_metric_delta_is_relative_to_the_dense_value():
    frame = pd.DataFrame(PERPLEXITY_ROWS)
    # delta 0: nothing worse than dense; granet's 9.9 is better, so it still counts
    assert prune_potential(frame, delta=0.0)[("gmp", "clean")] == 0.0
    assert prune_potential(frame, delta=0.0)[("granet", "clean")] == 0.95
    # delta 0.1: <= 11.0 clean takes gmp's 10.6; <= 44.0 on shift.other takes its 43.0
    assert prune_potential(frame, delta=0.1)[("gmp", "clean")] == 0.9
    assert prune_potential(frame, delta=0.1)[("gmp", "shift.other")] == 0.8
    # a relative tolerance may exceed 1 (twice the dense perplexity), an accuracy difference may not
    assert prune_potential(frame, delta=1.0)[("granet", "shift.other")] == 0.95
    with pytest.raises(ConfigError, match=r"delta: got 1\.0; allowed: an accuracy difference"):
        prune_potential(ROWS, delta=1.0)
    with pytest.raises(ConfigError, match=r"delta: got -0\.1; allowed: a relative increase >= 0"):
        prune_potential(frame, delta=-0.1)


def test_a_negative_min_metric_is_bounded_by_its_magnitude():
    rows = [{"method": "dense", "sparsity": 0.0, "distribution": "clean", "value": -2.0, "direction": "min"},
            {"method": "gmp", "sparsity": 0.5, "distribution": "clean", "value": -1.2, "direction": "min"},
            {"method": "gmp", "sparsity": 0.7, "distribution": "clean", "value": -0.8, "direction": "min"}]
    # dense + delta * |dense| = -2.0 + 0.5 * 2.0 = -1.0: -1.2 is in, -0.8 out
    assert prune_potential(rows, delta=0.5) == {("gmp", "clean"): 0.5}


def test_value_rows_of_a_max_metric_match_accuracy_rows():
    as_values = [{**{k: v for k, v in row.items() if k != "accuracy"}, "value": row["accuracy"],
                  "direction": "max"} for row in ROWS]
    for delta in (0.0, 0.005, 0.03):
        assert prune_potential(as_values, delta=delta) == prune_potential(ROWS, delta=delta)


def test_rows_of_several_directions_are_refused():
    mixed = PERPLEXITY_ROWS + [{"method": "gmp", "sparsity": 0.5, "distribution": "fog", "value": 0.5,
                                "direction": "max"}]
    with pytest.raises(ConfigError, match=r"results: direction 'max', 'min'; allowed: one of max, min"):
        prune_potential(mixed)
    with pytest.raises(ConfigError, match=r"results: missing columns \['direction'\]"):
        prune_potential([{k: v for k, v in row.items() if k != "direction"} for row in PERPLEXITY_ROWS])


def language_model_trials(**task_columns) -> pd.DataFrame:
    """A recorded sweep of language models (as tracking.load_sweep gives it): perplexity on the test
    split and on robustness.datasets' ``other`` (a loss beside it, never a distribution)."""
    task = task_columns or {"params.task": "causal_lm"}
    rows = [("dense", "FINISHED", 1.0, 10.0, 40.0), ("gmp", "FINISHED", 0.5, 10.3, 41.0),
            ("gmp", "FINISHED", 0.2, 10.5, 43.0), ("gmp", "KILLED", 0.1, 10.0, 40.0)]
    return pd.DataFrame([{**task, "status": status, "params.sparsity.method": method, "metrics.density": density,
                          "metrics.test_perplexity": clean, "metrics.shift.other.perplexity": other,
                          "metrics.shift.other.loss": 3.7}
                         for method, status, density, clean, other in rows])


def test_a_language_model_sweep_compares_perplexity_downwards():
    from raysparse.report import sweep_potential, sweep_potential_rows

    rows = sweep_potential_rows(language_model_trials())
    assert {(r["method"], r["sparsity"], r["distribution"], r["value"]) for r in rows} == {
        ("dense", 0.0, "clean", 10.0), ("dense", 0.0, "shift.other", 40.0), ("gmp", 0.5, "clean", 10.3),
        ("gmp", 0.5, "shift.other", 41.0), ("gmp", 0.8, "clean", 10.5), ("gmp", 0.8, "shift.other", 43.0)}
    assert {(r["metric"], r["direction"]) for r in rows} == {("perplexity", "min")}
    # <= 10.5 clean, <= 42.0 on the other text (delta 0.05 of dense): gmp holds to 0.8 in domain, 0.5 off it
    table, note = sweep_potential(language_model_trials(), 0.05)
    assert note == "" and table.loc["clean", "gmp"] == 0.8 and table.loc["shift.other", "gmp"] == 0.5
    # the task named in a block ({name: causal_lm, ...}) is the same task
    same = sweep_potential_rows(language_model_trials(**{"params.task.name": "causal_lm"}))
    assert sorted(map(str, same)) == sorted(map(str, rows))


def test_a_classifier_sweep_compares_the_classification_task_main_metric():
    from raysparse.report import sweep_potential_rows
    from raysparse.tasks.classification import Classification

    trials = pd.DataFrame([
        {"status": "FINISHED", "params.sparsity.method": method, "metrics.density": density,
         "metrics.test_accuracy": accuracy, "metrics.shift.other.accuracy": accuracy - 0.1, **task}
        for method, density, accuracy in (("dense", 1.0, 0.9), ("gmp", 0.2, 0.89))
        for task in ({}, {"params.task": "classification"})])  # recorded before tasks existed, and after
    rows = sweep_potential_rows(trials)
    assert {(r["metric"], r["direction"]) for r in rows} == {next(iter(Classification.metrics.items()))}
    assert {r["distribution"] for r in rows} == {"clean", "shift.other"}


def test_a_sweep_potential_says_why_it_has_none():
    from raysparse.report import sweep_potential

    mixed = pd.concat([language_model_trials(), language_model_trials(**{"params.task": "classification"})
                       .assign(**{"metrics.test_accuracy": 0.9})])
    table, note = sweep_potential(mixed, 0.05)
    assert table is None and "different main metrics (accuracy (max), perplexity (min))" in note
    table, note = sweep_potential(language_model_trials(**{"params.task": "nowhere_module:Task"}), 0.05)
    assert table is None and note.startswith("Not measured: cannot import 'nowhere_module'")
    unmeasured = language_model_trials().drop(columns="metrics.test_perplexity")
    assert sweep_potential(unmeasured, 0.05)[1].startswith("Not measured: no finished trial reported test_perplexity")
