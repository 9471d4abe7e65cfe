import pytest

import raysparse
from tests.conftest import small_config


@pytest.fixture(scope="package")
def ray_runtime():
    """A real local Ray runtime with 2 CPUs, bound to loopback, token auth on (Ray's default)."""
    import ray

    from raysparse.search.local_ray import start_local_ray

    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_sweep(name, **changes):
    base = small_config("granet", prune_end=2)
    base["epochs"] = 3
    base["model"] = {"name": "mlp", "hidden": [32]}
    raw = {
        "name": name,
        "base": base,
        "space": {
            "sparsity.method": {"choice": ["gmp", "granet"]},
            "sparsity.final_sparsity": {"uniform": [0.6, 0.9]},
        },
        "objectives": {"val_accuracy": "max"},
        "num_samples": 4,
        "max_concurrent": 2,
        "early_stopping": False,
    }
    raw.update(changes)
    return raw


@pytest.fixture(scope="package")
def four_trials(ray_runtime, home, tmp_path_factory):
    """A finished sweep of 4 small trials, each judged at the end on two corruptions and against a
    reference network named by a path relative to where the sweep starts (trials run elsewhere)."""
    import os

    import torch

    from raysparse.zoo import build_model

    sweep = tiny_sweep("four")
    sweep["base"]["robustness"] = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5],
                                   "noise_eps": [0.1], "reference": "reference.pt"}
    started_in = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("sweep_cwd"))
    try:
        torch.save(build_model(sweep["base"]["model"], (1, 8, 8), 10).state_dict(), "reference.pt")
        return raysparse.sweep(sweep, home=home, verbose=False)
    finally:
        os.chdir(started_in)


def logged_steps(uri, run_id, keys=("epoch", "train_loss", "val_accuracy", "density")):
    """``{metric: [step, ...]}`` in the order MLflow's metric history holds them: a step that
    appears twice was logged twice (a retry redoing epochs), a missing one was lost."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in keys}
