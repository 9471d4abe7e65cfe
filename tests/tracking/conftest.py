"""A sweep run on the session's MLflow server (``tracking_uri``, tests/conftest.py), and trial helpers."""

import pytest
import torch
from torch import nn

from raysparse.sparsity.masks import MaskSet, prunable_weights
from raysparse.tracking import SweepRun, TrialRun

CONFIG = {"seed": 0, "model": {"name": "mlp", "hidden": [64, 32]}, "sparsity": {"method": "gmp", "final_sparsity": 0.9}}


@pytest.fixture
def sweep(tracking_uri, request):
    return SweepRun.start(tracking_uri, f"exp-{request.node.name}", "quickstart", params=CONFIG, sweep_text="a: 1\n")


def open_trial(sweep, trial_id, **params):
    return TrialRun.open(sweep.tracking_uri, sweep.experiment_id, sweep.run_id, trial_id, run_name=f"run-{trial_id}",
                         params={**CONFIG, **params})


def log_two_trials_one_left_running(sweep):
    """t0 ends FINISHED at val_accuracy 0.9; t1 ends at 0.7 but stays RUNNING, as when Tune kills the trial process."""
    for trial_id, final_accuracy in (("t0", 0.9), ("t1", 0.7)):
        run = open_trial(sweep, trial_id, lr=0.05)
        for epoch, accuracy in enumerate((0.5, final_accuracy), start=1):
            run.log_epoch({"val_accuracy": accuracy, "layer_density": {"fc": 0.1 * epoch}}, step=epoch)
        if trial_id == "t0":
            run.finish()


def masked_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return model, MaskSet(prunable_weights(model))


def prune(masks, density, step, seed):
    g = torch.Generator().manual_seed(seed)
    masks.update({n: torch.rand(m.shape, generator=g) < density for n, m in masks.masks.items()}, step=step,
                 reason=f"prune to {density}")
