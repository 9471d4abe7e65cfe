"""How many trials run at once: a local runtime starts no more DDP trials than their workers fit."""

from raysparse.search.settings import DDP_HOST_CPUS, concurrent_trials
from raysparse.search.spaces import load_sweep
from tests.search.conftest import tiny_sweep


def sweep_with(workers, cpus_per_worker, max_concurrent):
    return load_sweep(tiny_sweep("n", max_concurrent=max_concurrent,
                                 resources={"workers": workers, "cpus_per_worker": cpus_per_worker}))


def test_ddp_trials_at_once_are_as_many_as_their_workers_fit_on_a_local_runtime():
    # each trial holds 2 x 0.5 CPUs + its own process's DDP_HOST_CPUS
    assert concurrent_trials(sweep_with(2, 0.5, 4), cpus=2) == int(2 // (1 + DDP_HOST_CPUS)) == 1
    assert concurrent_trials(sweep_with(2, 0.5, 4), cpus=16) == 4  # max_concurrent still caps
    assert concurrent_trials(sweep_with(2, 0.5, 4), cpus=None) == 4  # a cluster may grow: no cap
    assert concurrent_trials(sweep_with(1, 1, 3), cpus=2) == 3  # one-worker trials: Tune reserves all they hold
