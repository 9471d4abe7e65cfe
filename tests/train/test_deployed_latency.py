"""A trial's final latency is the deployed form's: the trained network goes through raysparse.deploy
at batch 1 and 64; during training only the dense figure is reported, under its own name."""

import pytest
import torch

import raysparse.deployment
from raysparse.train.loop import fit
from tests.conftest import small_config


@pytest.mark.parametrize("method", ["gmp", "dst"])
def test_final_latency_is_measured_on_the_deployed_network(method, monkeypatch):
    deployed = []

    def spy(model, example_input, *, batch_size=None):
        network = real(model, example_input, batch_size=batch_size)
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        deployed.append((example_input.shape[0], network.plan, sum(int((w == 0).sum()) for w in weights)))
        return network

    real = raysparse.deployment.deploy
    monkeypatch.setattr(raysparse.deployment, "deploy", spy)
    cfg = {**small_config(method), "epochs": 2, "measure_latency": True}
    reports = []
    final = fit(cfg, lambda metrics, context: reports.append(metrics))
    assert [batch for batch, _, _ in deployed] == [1, 64]  # once per batch size, at the end only
    for batch, plan, zeros in deployed:
        assert zeros > 0  # the trained network, masks in its weights (DST's multiplied in by its export)
        assert final[f"deployed_sparse_layers_b{batch}"] == plan.sparse_layers()
        assert len(plan) == 3 and plan.batch_size == batch
    assert final["latency_ms_b1"] > 0 and final["latency_ms_b64"] > 0
    assert "latency_ms_b64" not in reports[0] and reports[0]["latency_dense_ms_b64"] > 0
    assert torch.isfinite(torch.tensor(final["latency_dense_ms_b1"]))
