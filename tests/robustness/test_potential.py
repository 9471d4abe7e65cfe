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
