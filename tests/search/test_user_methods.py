"""A method registered on the driver runs in the sweep's trial processes, whose registry starts with
the built-in methods only: it travels with the trials, by value when it cannot be imported."""

from dataclasses import dataclass

import pytest

import raysparse
from raysparse.methods import METHODS
from raysparse.methods.registry import _USER
from tests.search.conftest import tiny_sweep


def local_method():
    """A method class defined in a function, as in a notebook: nothing can import it by name."""

    @dataclass(frozen=True)
    class HalvingOptions(raysparse.MethodOptions):
        halvings: int = 1  # prune_end is split into this many equal pruning steps

    class Halving(raysparse.SparseMethod):
        name = "halving_local"
        Options = HalvingOptions

        def update_masks(self, step):
            n = self.options.halvings
            for k in range(1, n + 1):
                if step == self.prune_end_step * k // n:
                    self.prune_by_magnitude(1 - self.config.final_sparsity * k / n, step, reason=f"halving {k}")

    return Halving


@pytest.fixture
def registered():
    cls = raysparse.register_method(local_method())
    yield cls
    METHODS._entries.pop(cls.name)
    _USER.pop(cls.name)


def test_a_registered_method_and_its_options_reach_the_trials(registered, ray_runtime, home):
    from raysparse.tracking import download_lineage

    sweep = tiny_sweep("user-methods", sampler="grid", num_samples=2)
    sweep["base"]["sparsity"].update(method="halving_local", halvings=3)  # its own key in the base block
    sweep["space"] = {"sparsity.method": {"choice": ["halving_local", "gmp"]}}  # gmp ignores `halvings`
    result = raysparse.sweep(sweep, home=home, verbose=False)
    assert result.errors == []
    trials = result.to_dataframe().set_index("params.sparsity.method")
    assert set(trials["status"]) == {"FINISHED"}
    assert trials.loc["halving_local", "metrics.density"] == pytest.approx(0.2, abs=0.01)
    lineage = download_lineage(result.tracking_uri, trials.loc["halving_local", "run_id"])
    assert [row["reason"] for row in lineage if row["reason"].startswith("halving")] == [
        "halving 1", "halving 2", "halving 3"]
