"""``raysparse deploy RUN_ID`` on a trial logged to a real MLflow server: the deployed network is
logged next to the run's model, loads with weights_only=True and computes what the trial's network does."""

import torch
from mlflow import MlflowClient

import raysparse
from raysparse.cli import main
from raysparse.deployment import load_deployed
from raysparse.sparsity.masks import MaskSet, prunable_weights
from raysparse.tracking import SweepRun, TrialRun
from raysparse.zoo import build_model
from tests.conftest import small_config


def logged_trial(uri: str) -> str:
    """A trial's final record, as a sweep logs it: a zoo MLP with 90% of its weights masked."""
    cfg = small_config("gmp")
    torch.manual_seed(0)
    model = build_model(cfg["model"], (1, 8, 8), 10)
    masks = MaskSet(prunable_weights(model))
    masks.update({n: torch.rand(w.shape) < 0.1 for n, w in masks.weights.items()}, step=1, reason="prune")
    sweep = SweepRun.start(uri, "deploy-cli", "deploy-cli", params=cfg, sweep_text="a: 1\n")
    run = TrialRun.open(uri, sweep.experiment_id, sweep.run_id, "t0", run_name="run-t0", params=cfg)
    run.log_final(packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=model.state_dict(),
                  config=cfg,
                  build_info={"input_shape": [1, 8, 8], "num_classes": 10, "import_dirs": []})
    run.finish()
    return run.run_id


def test_deploy_logs_the_deployed_network_and_prints_its_plan(tracking_uri, tmp_path, capsys):
    run_id = logged_trial(tracking_uri)
    assert main(["deploy", run_id, "--batch-size", "4", "--tracking-uri", tracking_uri]) == 0
    printed = capsys.readouterr().out
    assert "kernel" in printed and "batch 4:" in printed and "deployed/model.pt" in printed
    client = MlflowClient(tracking_uri)
    assert {f.path for f in client.list_artifacts(run_id, "deployed")} == {"deployed/model.pt", "deployed/plan.txt"}
    path = client.download_artifacts(run_id, "deployed/model.pt", str(tmp_path))
    deployed = load_deployed(path)
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), network(x), rtol=1e-4, atol=1e-4)
    assert [row.layer for row in deployed.plan] == ["1", "3", "5"] and deployed.plan.batch_size == 4


def test_deploy_names_a_bad_batch_size(capsys):
    assert main(["deploy", "0123", "--batch-size", "0"]) == 2
    assert "--batch-size: got 0; allowed: an integer >= 1" in capsys.readouterr().err
