"""A sweep of post-training pruning (``epochs: 0``): each trial loads, prunes, evaluates once."""

from raysparse.search import run_sweep
from tests.search.conftest import tiny_sweep


def test_a_sweep_of_post_training_pruning_reports_each_trial_once(ray_runtime, home):
    raw = tiny_sweep("post", num_samples=2, sampler="grid", max_concurrent=2)
    raw["base"]["epochs"] = 0
    raw["base"]["sparsity"] = {"method": "wanda", "distribution": "uniform", "prune_start": 0, "prune_end": 0}
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.5, 0.7]}}
    result = run_sweep(raw, home=home, verbose=False)
    trials = result.to_dataframe()
    assert sorted(trials["status"]) == ["FINISHED", "FINISHED"]
    assert sorted(trials["metrics.epoch"]) == [0, 0]  # evaluated once, after pruning: no epoch trained
    assert "metrics.train_loss" not in trials or trials["metrics.train_loss"].isna().all()
    densities = dict(zip(trials["params.sparsity.final_sparsity"].astype(float), trials["metrics.density"]))
    assert densities[0.5] > densities[0.7]
    assert trials["metrics.val_accuracy"].notna().all()
