"""Language-model sweeps on real components (local Ray, Optuna, an MLflow server): a user's package
with a tiny GPT and character data, swept from YAML by import path with task causal_lm and a
searched per-layer allocation; a loop of the user's around nn.MultiheadAttention."""

from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch import nn

import raysparse
from raysparse.imports import add_import_dirs
from raysparse.report import stage_line
from raysparse.sparsity.masks import weight_slots
from raysparse.tasks.causal_lm import CausalLM
from raysparse.tracking import download_masks
from tests.conftest import lm_config

TINYLM = '''
"""A user's language model and data, written without raysparse."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x):
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device), 1)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab_size, block_size, width=16, heads=2):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab_size, width), nn.Embedding(block_size, width)
        self.blocks = nn.Sequential(Block(width, heads), Block(width, heads))
        self.head = nn.Linear(width, vocab_size)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.blocks(x))


def chars(block=16):
    vocab = sorted(set(TEXT))
    ids = torch.tensor([vocab.index(c) for c in TEXT])
    blocks = ids[: len(ids) // block * block].view(-1, block)
    return {"train": TensorDataset(blocks[:-30]), "test": TensorDataset(blocks[-30:]), "vocab_size": len(vocab)}
'''


@pytest.fixture(scope="module")
def tinylm(tmp_path_factory):
    project = tmp_path_factory.mktemp("lmproject")
    (project / "tinylm.py").write_text(TINYLM)
    add_import_dirs([project])  # the test process imports the model as load_model will
    return project


def test_a_yaml_sweep_of_a_users_language_model_with_a_searched_allocation(ray_runtime, home, tinylm):
    base = {"task": "causal_lm", "epochs": 3, "measure_latency": False,
            "model": {"factory": "tinylm:TinyGPT", "width": 16},
            "data": {"factory": "tinylm:chars", "batch_size": 16},
            "optimizer": {"name": "adam", "lr": 0.01},
            "sparsity": {"method": "gmp", "final_sparsity": 0.7, "prune_end": 1, "update_frequency": 4}}
    sweep = {"name": "tinylm", "base": base, "space": {"sparsity.method": {"choice": ["gmp", "rigl"]}},
             "layer_sparsity": {"bounds": [0.05, 1.0], "layers": ["blocks.*"]},
             "objectives": {"val_perplexity": "min"}, "num_samples": 3, "sampler": "random",
             "early_stopping": {"grace_period": 2}}
    path = tinylm / "tinylm.yaml"
    path.write_text(yaml.safe_dump(sweep))
    result = raysparse.sweep(str(path), home=home, verbose=False)

    trials = result.to_dataframe()
    assert set(trials["status"]) <= {"FINISHED", "KILLED"} and "FINISHED" in set(trials["status"])
    assert trials["metrics.val_perplexity"].notna().all() and "metrics.val_accuracy" not in trials
    best = result.best()
    finished = trials[trials["status"] == "FINISHED"]
    assert best["metrics"]["val_perplexity"] == finished["metrics.val_perplexity"].min()
    assert best["metrics"]["density"] == pytest.approx(0.3, abs=0.02)  # the searched allocation keeps the budget
    html = Path(result.report["html"]).read_text()
    assert "val_perplexity" in html
    network = raysparse.load_model(best["run_id"], tracking_uri=result.tracking_uri)
    masks = download_masks(result.tracking_uri, best["run_id"])
    assert {"blocks.0.attn.in_proj_weight", "blocks.1.attn.out_proj", "head"} <= set(masks)
    for name, mask in masks.items():
        module, attribute = weight_slots(network)[name]
        assert torch.all(getattr(module, attribute)[~mask] == 0)
    assert network(torch.zeros(2, 16, dtype=torch.long)).shape[:2] == (2, 16)


def tiny_lm_loop(trial):
    """A user's loop: the model and data of tinylm, trained and scored by the user's own code."""
    import tinylm

    config = trial.config
    torch.manual_seed(config["seed"])
    data = tinylm.chars()
    model = tinylm.TinyGPT(data["vocab_size"], 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(data["train"], batch_size=16, shuffle=True)
    task = CausalLM()
    sparsifier = trial.sparsifier(model, optimizer, steps_per_epoch=len(loader), task=task)
    state, start = trial.restore(), 0
    if state is not None:
        model.load_state_dict(state["model"])
        start = state["epoch"]
    for epoch in range(start, config["epochs"]):
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            task.loss(model, batch)[0].backward()
            optimizer.step()
            sparsifier.step()
        metrics = task.evaluate(model, torch.utils.data.DataLoader(data["test"], batch_size=32), torch.device("cpu"))
        trial.report({"val_perplexity": metrics["perplexity"]},
                     checkpoint={"model": model.state_dict(), "epoch": epoch + 1})
    if config["sparsity"]["method"] == "set" and state is None:  # its process dies after the last report
        raise RuntimeError("the trial's process died (simulated)")


def test_a_loop_of_your_own_around_multihead_attention_finishes_with_its_model(ray_runtime, home, tinylm):
    base = {"epochs": 2, "measure_latency": False,
            "sparsity": {"method": "gmp", "final_sparsity": 0.5, "prune_end": 1, "update_frequency": 4}}
    sweep = {"name": "tinylm_loop", "base": base, "space": {"sparsity.method": {"choice": ["gmp", "set"]}},
             "sampler": "grid", "objectives": {"val_perplexity": "min"}, "early_stopping": False, "max_failures": 1,
             "import_dirs": [str(tinylm)]}
    result = raysparse.sweep(sweep, loop=tiny_lm_loop, home=home, verbose=False)
    trials = result.to_dataframe()
    assert list(trials["status"]) == ["FINISHED", "FINISHED"], trials["failure_reason"].tolist()
    # the set trial's retry had nothing left to train: it finished from the checkpoint of its last report
    retried = trials.set_index("params.sparsity.method").loc["set", "run_id"]
    steps = [m.step for m in MlflowClient(result.tracking_uri).get_metric_history(retried, "val_perplexity")]
    assert sorted(steps) == [1, 2]
    assert Path(result.report["html"]).is_file()
    import tinylm

    run_id = trials["run_id"].iloc[0]
    network = raysparse.load_model(run_id, tracking_uri=result.tracking_uri,
                                   model=lambda: tinylm.TinyGPT(len(set(tinylm.TEXT)), 16))
    masks = download_masks(result.tracking_uri, run_id)
    attention = masks["blocks.0.attn.in_proj_weight"]
    assert torch.all(network.blocks[0].attn.in_proj_weight[~attention] == 0) and not attention.all()
    assert isinstance(network.blocks[0].attn, nn.MultiheadAttention)


def test_a_language_model_sweep_with_a_dense_stage_and_pbt_on_perplexity(ray_runtime, home, text_file):
    base = lm_config(text_file, "oneshot", final_sparsity=0.6, prune_end=0)
    base["epochs"] = 4
    sweep = {"name": "lm_pbt", "base": base, "pretrain": {"epochs": 2},
             "space": {"optimizer.lr": {"loguniform": [0.0003, 0.01]}}, "num_samples": 2,
             "objectives": {"val_perplexity": "min"},
             "early_stopping": {"scheduler": "pbt", "interval": 2, "quantile_fraction": 0.5}}
    result = raysparse.sweep(sweep, home=home, verbose=False)
    trials = result.to_dataframe()
    assert list(trials["status"]) == ["FINISHED", "FINISHED"], trials["failure_reason"].tolist()
    stage = result.stage()
    assert stage is not None and stage["status"] == "FINISHED" and stage["metrics.val_perplexity"] > 1
    assert stage_line(stage, [("metrics.val_perplexity", "min")]).startswith("dense stage: 2 epochs, val_perplexity")
    # oneshot trials prune the stage's trained network: they start far below the byte vocabulary's 256
    first = MlflowClient(result.tracking_uri).get_metric_history(trials["run_id"].iloc[0], "val_perplexity")
    assert min(m.value for m in first if m.step == 1) < 100
