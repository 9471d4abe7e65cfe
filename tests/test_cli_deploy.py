"""``raysparse deploy RUN_ID`` on a trial logged to a real MLflow server: the deployed network is
logged next to the run's model as weights, plan and the model's spec, and ``load_deployed`` builds it
back (a zoo model, a torchvision one, a class of the user's given as model=) computing what the
trial's network does."""

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

import raysparse
from raysparse.cli import main
from raysparse.deployment import load_deployed
from raysparse.sparsity.masks import MaskSet, prunable_weights
from raysparse.tracking import SweepRun, TrialRun
from raysparse.zoo.user_code import build_network
from tests.conftest import small_config


class UserNet(nn.Module):
    """A user's classifier, recorded in the run's config by import path (``model.python``)."""

    def __init__(self, input_shape, num_classes, *, hidden: int = 32):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), hidden),
                                    nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(x)


def logged_trial(uri: str, model: dict | None = None, input_shape=(1, 8, 8), name: str = "deploy-cli") -> str:
    """A trial's final record, as a sweep logs it: a zoo MLP (or ``model``) with 90% of its weights masked."""
    cfg = small_config("gmp")
    cfg["model"] = model or cfg["model"]
    torch.manual_seed(0)
    network = build_network(cfg["model"], {"input_shape": tuple(input_shape), "num_classes": 10},
                            given=UserNet if "python" in cfg["model"] else None)
    masks = MaskSet(prunable_weights(network))
    masks.update({n: torch.rand(w.shape) < 0.1 for n, w in masks.weights.items()}, step=1, reason="prune")
    sweep = SweepRun.start(uri, name, name, params=cfg, sweep_text="a: 1\n")
    run = TrialRun.open(uri, sweep.experiment_id, sweep.run_id, "t0", run_name="run-t0", params=cfg)
    run.log_final(packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=network.state_dict(),
                  config=cfg,
                  build_info={"input_shape": list(input_shape), "num_classes": 10, "import_dirs": []})
    run.finish()
    return run.run_id


def deployed_file(uri: str, run_id: str, folder) -> str:
    client = MlflowClient(uri)
    assert {f.path for f in client.list_artifacts(run_id, "deployed")} == {"deployed/model.pt", "deployed/plan.txt"}
    return client.download_artifacts(run_id, "deployed/model.pt", str(folder))


def test_deploy_logs_the_deployed_network_and_prints_its_plan(tracking_uri, tmp_path, capsys):
    run_id = logged_trial(tracking_uri)
    assert main(["deploy", run_id, "--batch-size", "4", "--tracking-uri", tracking_uri]) == 0
    printed = capsys.readouterr().out
    assert "kernel" in printed and "batch 4:" in printed and "deployed/model.pt" in printed
    assert "load it with raysparse.load_deployed(path)" in printed
    deployed = load_deployed(deployed_file(tracking_uri, run_id, tmp_path))
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), network(x), rtol=1e-4, atol=1e-4)
    assert [row.layer for row in deployed.plan] == ["1", "3", "5"] and deployed.plan.batch_size == 4


def test_a_deployed_torchvision_run_loads_back(tracking_uri, tmp_path, capsys):
    run_id = logged_trial(tracking_uri, {"name": "torchvision:resnet18"}, (3, 16, 16), "deploy-torchvision")
    assert main(["deploy", run_id, "--batch-size", "2", "--tracking-uri", tracking_uri]) == 0
    assert "layer4.1.conv2" in capsys.readouterr().out
    deployed = load_deployed(deployed_file(tracking_uri, run_id, tmp_path))
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), network(x), rtol=1e-4, atol=1e-4)
    assert deployed.plan.batch_size == 2 and len(deployed.plan) == 21  # 20 convolutions and fc


def test_a_deployed_run_of_a_users_class_loads_back_with_the_class_given(tracking_uri, tmp_path, capsys):
    path = "tests.test_cli_deploy:UserNet"
    run_id = logged_trial(tracking_uri, {"python": path, "hidden": 48}, name="deploy-user")
    assert main(["deploy", run_id, "--tracking-uri", tracking_uri]) == 0
    assert f"load it with raysparse.load_deployed(path, model=<{path}>)" in capsys.readouterr().out
    file = deployed_file(tracking_uri, run_id, tmp_path)
    with pytest.raises(ValueError, match=f"was deployed from your model '{path}'; pass it as model=") as refused:
        load_deployed(file)
    assert "\n" not in str(refused.value)
    deployed = load_deployed(file, model=UserNet)  # the run's options (hidden: 48) come from the file
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), network(x), rtol=1e-4, atol=1e-4)
    assert deployed.network.layers[1].in_features == 64 and deployed.network.layers[1].out_features == 48


def test_deploy_names_a_bad_batch_size(capsys):
    assert main(["deploy", "0123", "--batch-size", "0"]) == 2
    assert "--batch-size: got 0; allowed: an integer >= 1" in capsys.readouterr().err
