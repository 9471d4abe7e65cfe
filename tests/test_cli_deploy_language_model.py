"""``raysparse deploy RUN_ID`` on language-model trials logged to a real MLflow server: it plans on
the token ids the trial logged (``model/example_input.pt``), repeated to ``--batch-size``; a run
that logged neither an example nor an input shape is refused in one line naming ``run``."""

import torch
from mlflow import MlflowClient

import raysparse
from raysparse.cli import main
from raysparse.deployment import load_deployed
from raysparse.sparsity.masks import MaskSet, prunable_weights
from raysparse.tracking import SweepRun, TrialRun
from raysparse.zoo import build_model
from tests.conftest import lm_config
from tests.zoo.test_hf import LLAMA

TEXT = {"vocab_size": 256, "block_size": 32}  # what the text data source tells the model factory


def logged_lm_trial(uri: str, cfg: dict, data_info: dict, example, name: str) -> str:
    """A language-model trial's final record, as a sweep logs it: 90% of its weights masked."""
    torch.manual_seed(0)
    model = build_model(cfg["model"], data_info)
    masks = MaskSet(prunable_weights(model))
    # zeros the pruned weights too: the logged state is what deploy finds sparse
    masks.update({n: torch.rand(w.shape) < 0.1 for n, w in masks.weights.items()}, step=1, reason="prune")
    sweep = SweepRun.start(uri, name, name, params=cfg, sweep_text="a: 1\n")
    run = TrialRun.open(uri, sweep.experiment_id, sweep.run_id, "t0", run_name="run-t0", params=cfg)
    run.log_final(packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=model.state_dict(),
                  config=cfg, build_info={"data_info": data_info, "import_dirs": []}, example_input=example)
    run.finish()
    return run.run_id


def test_deploy_plans_a_gpt_run_on_its_logged_token_ids(tracking_uri, text_file, tmp_path, capsys):
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    run_id = logged_lm_trial(tracking_uri, lm_config(text_file, "gmp"), TEXT, ids, "deploy-gpt")
    assert main(["deploy", run_id, "--batch-size", "3", "--tracking-uri", tracking_uri]) == 0
    printed = capsys.readouterr().out
    assert "batch 3:" in printed and "deployed/model.pt" in printed
    layers = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj"]
    assert all(f"blocks.0.{layer}  " in printed for layer in layers)
    client = MlflowClient(tracking_uri)
    deployed = load_deployed(client.download_artifacts(run_id, "deployed/model.pt", str(tmp_path)))
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    x = ids[torch.tensor([0, 1, 0])]
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), network(x), rtol=1e-4, atol=1e-4)
    assert [row.layer for row in deployed.plan] == [f"blocks.0.{layer}" for layer in layers]
    assert deployed.plan.batch_size == 3 and all(row.density < 0.2 for row in deployed.plan)


def test_deploy_plans_an_hf_run_on_its_logged_keyword_inputs_and_it_loads_back(tracking_uri, tmp_path, capsys):
    cfg = lm_config("unused.txt", "gmp")
    cfg["model"] = {"name": "hf", "config": LLAMA}
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    run_id = logged_lm_trial(tracking_uri, cfg, {"vocab_size": 50, "block_size": 16}, example, "deploy-hf")
    assert main(["deploy", run_id, "--batch-size", "2", "--tracking-uri", tracking_uri]) == 0
    printed = capsys.readouterr().out
    assert "batch 2:" in printed and "model.layers.1.self_attn.q_proj" in printed and "mlp.gate_proj" in printed
    deployed = load_deployed(MlflowClient(tracking_uri).download_artifacts(run_id, "deployed/model.pt", str(tmp_path)))
    network = raysparse.load_model(run_id, tracking_uri=tracking_uri).eval()
    with torch.no_grad():
        torch.testing.assert_close(deployed(**example).logits, network(**example).logits, rtol=1e-4, atol=1e-4)


def test_deploy_refuses_a_run_that_recorded_no_example_input(tracking_uri, text_file, capsys):
    run_id = logged_lm_trial(tracking_uri, lm_config(text_file, "gmp"), TEXT, None, "deploy-no-example")
    assert main(["deploy", run_id, "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert f"raysparse: error: run: run {run_id} recorded no example input" in err
    assert len(err.strip().splitlines()) == 1
