import pytest

import raysparse
from raysparse.train import TrainingDiverged, fit
from tests.conftest import small_config

REQUIRED = {
    "epoch", "train_loss", "val_accuracy", "test_accuracy", "density", "layer_density", "flops_dense",
    "flops_sparse", "mask_churn", "lr", "epoch_seconds",
}


def test_reports_every_epoch_with_the_required_metrics():
    reports, events = [], []
    fit(small_config("gmp"), lambda m, ctx: (reports.append(m), events.extend(ctx.mask_events)))
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    for r in reports:
        assert REQUIRED <= set(r)
        assert min(r["layer_density"].values()) <= r["density"] <= max(r["layer_density"].values())
        assert 0 < r["flops_sparse"] <= r["flops_dense"]
    first, last = reports[0], reports[-1]
    assert first["density"] > last["density"] and last["flops_sparse"] < 0.5 * last["flops_dense"]
    assert sum(r["mask_churn"] for r in reports) > 0
    assert reports[-1]["lr"] < reports[0]["lr"]  # cosine schedule
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert all(b.parent_hash == a.hash for a, b in zip(events, events[1:]))  # an unbroken lineage


def test_flops_sparse_scales_with_layer_density():
    final = fit(small_config("static", final_sparsity=0.5, distribution="uniform"))
    ratio = final["flops_sparse"] / final["flops_dense"]
    assert 0.45 < ratio < 0.6  # linear layers dominate; ReLU etc. stay dense


def test_model_selection_is_on_validation():
    reports = []
    final = fit(small_config("dense"), lambda m, ctx: reports.append(m))
    best = max(reports, key=lambda r: r["val_accuracy"])
    assert final["best_epoch"] == best["epoch"] and final["best_val_accuracy"] == best["val_accuracy"]


def test_diverging_run_stops_with_a_reason():
    cfg = small_config("dense")
    cfg["optimizer"] = {"name": "sgd", "lr": 1.0e6, "momentum": 0.9, "weight_decay": 0.0}
    with pytest.raises(TrainingDiverged, match="train_loss is (nan|inf)"):
        fit(cfg)


def test_user_module_through_the_python_api():
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    final = raysparse.train(small_config("gmp"), model=model)
    assert set(final["layer_density"]) == {"1", "3"}
    assert final["density"] == pytest.approx(0.2, abs=0.01)


def test_readme_config_reaches_95_percent_at_90_percent_sparsity():
    final = raysparse.train("configs/digits_granet.yaml")
    assert final["density"] == pytest.approx(0.1, abs=1e-3)
    assert final["test_accuracy"] >= 0.95
