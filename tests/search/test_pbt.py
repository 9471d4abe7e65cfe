"""PBT over sparse training on real components (Ray Tune's PopulationBasedTraining, MLflow): a
lagging trial copies a better one's checkpoint, masks included, and its lineage says so."""

import math

import pytest
from mlflow import MlflowClient

import raysparse
from raysparse.tracking import download_exploits, download_lineage
from tests.search.conftest import tiny_sweep


def pbt_sweep(name):
    raw = tiny_sweep(name)
    raw["base"].update(epochs=6, measure_latency=False)
    # learning rates two orders of magnitude apart: the slow trials lag at every perturbation
    raw["space"] = {"optimizer.lr": {"loguniform": [0.0003, 0.3]},
                    "sparsity.regrowth_ratio": {"uniform": [0.1, 0.5]}}
    raw["early_stopping"] = {"scheduler": "pbt", "interval": 2, "quantile_fraction": 0.5}
    return raw


def test_a_lagging_trial_copies_the_masks_of_a_better_one(ray_runtime, home):
    result = raysparse.sweep(pbt_sweep("pbt"), home=home, verbose=False)
    trials = result.to_dataframe()
    assert len(trials) == 4 and set(trials["status"]) == {"FINISHED"}
    assert (trials["metrics.epoch"] == 6).all()
    runs = dict(zip(trials["trial_id"], trials["run_id"]))
    assert "pbt_exploits" in trials, "no trial copied another: PBT made no exploit"
    copied = trials[trials["pbt_exploits"].fillna(0) > 0]
    for _, row in copied.iterrows():
        exploits = download_exploits(result.tracking_uri, row["run_id"])
        assert len(exploits) == row["pbt_exploits"]
        lineage = download_lineage(result.tracking_uri, row["run_id"])
        rows = [r for r in lineage if r["reason"].startswith("exploit")]
        assert len(rows) >= len(exploits)
        for exploit, lineage_row in zip(exploits, rows):
            source = exploit["source_trial_id"]
            assert source != row["trial_id"] and exploit["source_run_id"] == runs[source]
            assert lineage_row["source_trial_id"] == source and lineage_row["source_epoch"] == exploit["source_epoch"]
            # the masks it went on with are those of the source's checkpoint, by the source's own lineage
            saved = [r for r in download_lineage(result.tracking_uri, runs[source])
                     if r["reason"] == f"checkpoint at epoch {exploit['source_epoch']}"]
            assert saved and lineage_row["hash"] in {r["hash"] for r in saved}
            assert lineage_row["hash"] == exploit["source_masks_hash"]
        # what the report reads are the values it trained with last, not those it started with; and it
        # trained with them: the rate after the copy is the new one on the same cosine schedule
        last = exploits[-1]
        lr = last["params"]["optimizer.lr"]
        assert row["params.optimizer.lr"] == lr
        logged = sorted(MlflowClient(result.tracking_uri).get_metric_history(row["run_id"], "lr"),
                        key=lambda m: m.timestamp)
        after = [m.value for m in logged if m.step == last["source_epoch"] + 1][-1]
        assert after == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * last["source_epoch"] / 6)), rel=1e-6)
    assert result.best()["exploits"] == download_exploits(result.tracking_uri, result.best()["run_id"])
