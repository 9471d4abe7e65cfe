"""``epochs: 0``: load a trained network, prune it with calibration batches, evaluate it, record;
no training step. The evaluation is the one report of the run."""

import pytest
import torch

from raysparse.train import fit
from tests.conftest import lm_config


def post_training(text, method, tmp_path, **sparsity):
    """A network trained for 2 epochs (its state_dict saved), then loaded and pruned at epochs 0."""
    trained = lm_config(text, "dense")
    trained["epochs"] = 2
    reports = []
    fit(trained, report=lambda metrics, context: reports.append(context.model.state_dict()))
    weights = tmp_path / "trained.pt"
    torch.save(reports[-1], weights)
    config = lm_config(text, method, prune_start=0, prune_end=0, distribution="uniform", **sparsity)
    config.update(epochs=0, init_from=str(weights))
    seen = []
    metrics = fit(config, report=lambda m, context: seen.append((m, context.model.state_dict())))
    return torch.load(weights, weights_only=True), metrics, seen


@pytest.mark.parametrize("method", ["wanda", "oneshot"])
def test_a_trained_network_is_pruned_and_evaluated_without_a_training_step(text_file, tmp_path, method):
    trained, metrics, seen = post_training(text_file, method, tmp_path, final_sparsity=0.5)
    assert len(seen) == 1 and seen[0][0] is metrics  # one report: the evaluation
    assert metrics["epoch"] == 0 and metrics["step"] == 0
    assert "train_loss" not in metrics and "lr" not in metrics  # nothing was trained
    assert set(metrics["layer_density"].values()) == {0.5}  # uniform: each masked layer at the target
    assert metrics["weights_outside_masks"] > 0 and metrics["density"] > 0.5  # the tied head stays dense
    assert metrics["val_perplexity"] > 1 and metrics["test_perplexity"] > 1
    assert metrics["best_val_perplexity"] == metrics["val_perplexity"] and metrics["best_epoch"] == 0
    pruned = seen[0][1]
    for name, weight in trained.items():  # the loaded weights, only masked: no optimizer step moved one
        kept = pruned[name] != 0
        assert torch.equal(pruned[name][kept], weight[kept]), name


def test_the_dense_network_at_epochs_0_is_the_trained_one_evaluated(text_file, tmp_path):
    trained, metrics, seen = post_training(text_file, "dense", tmp_path)
    assert metrics["density"] == 1.0
    assert all(torch.equal(seen[0][1][name], weight) for name, weight in trained.items())


def test_other_texts_are_evaluated_beside_val_and_test(text_file, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("def f(x):\n    return x + 1\n" * 200)
    config = lm_config(text_file, "wanda", prune_start=0, prune_end=0, final_sparsity=0.5)
    config.update(epochs=0, evaluate_on={"code": {"name": "text", "path": str(other), "block_size": 32}})
    metrics = fit(config)
    assert metrics["code_perplexity"] > 1 and metrics["code_loss"] > 0
    assert metrics["code_perplexity"] != metrics["test_perplexity"]  # its own text, not the test split again


@pytest.mark.parametrize("evaluate_on, field", [
    ({"Code": {"name": "text"}}, "evaluate_on.Code"),
    ({"test": {"name": "text"}}, "evaluate_on.test"),
    ({"code": "text"}, "evaluate_on.code"),
])
def test_a_bad_other_text_is_one_line_naming_it(text_file, evaluate_on, field):
    from raysparse.config import load_config
    from raysparse.errors import ConfigError

    config = lm_config(text_file, "wanda")
    config["evaluate_on"] = evaluate_on
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.field == field
