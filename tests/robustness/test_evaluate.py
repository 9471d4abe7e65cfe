"""The robustness suite at the end of a run: corrupted accuracy, ECE, noise-ball agreement."""

import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.train import fit
from raysparse.zoo import build_model
from tests.conftest import small_config


def test_final_report_carries_robustness_metrics(tmp_path):
    torch.manual_seed(0)
    torch.save(build_model({"name": "mlp", "hidden": [64, 32]}, (1, 8, 8), 10).state_dict(), tmp_path / "ref.pt")
    cfg = small_config("granet")
    cfg["robustness"] = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5],
                         "noise_eps": [0.1], "reference": str(tmp_path / "ref.pt")}
    reports = []
    fit(cfg, lambda m, ctx: reports.append(m))
    assert "mean_corrupted_accuracy" not in reports[0]  # once, at the end: it is costly
    final = reports[-1]
    assert set(final["corrupted_accuracy"]) == {"gaussian_noise_1", "gaussian_noise_5", "contrast_1", "contrast_5"}
    # a stronger corruption costs accuracy: judged on contrast (about 9 points from severity 1 to 5 here), not
    # on gaussian noise (3 of 359 examples), a gap that training on another CPU's rounding can close
    assert final["corrupted_accuracy"]["contrast_5"] < final["corrupted_accuracy"]["contrast_1"]
    assert 0 <= final["ece"] <= 1 and 0 <= final["noise_agreement"] <= 1
    assert final["noise_agreement"] < 0.5  # an untrained reference rarely agrees with a trained network
    assert set(final["noise_accuracy"]) == {"eps_0.1"}
    assert set(final["excess_error"]) == set(final["corrupted_accuracy"])
    assert final["mean_excess_error"] == pytest.approx(sum(final["excess_error"].values()) / 4)


def _trained_and_reference(seed=0):
    """A GMP network trained on digits and a dense one, with the test split they are judged on."""
    from raysparse.zoo import build_data

    nets = {}
    for method in ("gmp", "dense"):
        torch.manual_seed(seed)
        cfg = small_config(method)
        nets[method] = build_model(cfg["model"], (1, 8, 8), 10)
        fit(cfg, model=nets[method])
    return nets["gmp"], nets["dense"], build_data(small_config()["data"], 0).test


def test_a_network_judged_against_itself_loses_nothing_and_agrees_everywhere():
    import copy

    from raysparse.robustness.evaluate import RobustnessConfig, robustness_metrics

    model, _, test = _trained_and_reference()
    cfg = RobustnessConfig(corruptions=("gaussian_noise", "pixelate"), severities=(3, 5), noise_eps=(0.1, 0.5))
    metrics = robustness_metrics(model, test, cfg, torch.device("cpu"), reference=copy.deepcopy(model))
    assert set(metrics["excess_error"].values()) == {0.0}
    assert metrics["noise_agreement"] == 1.0 and metrics["noise_softmax_distance"] == pytest.approx(0.0, abs=1e-6)
    assert set(metrics["noise_ball"]) == {"agreement_eps_0.1", "agreement_eps_0.5", "softmax_distance_eps_0.1",
                                          "softmax_distance_eps_0.5"}


def test_excess_error_is_the_accuracy_lost_beyond_what_the_reference_loses():
    from raysparse.robustness.evaluate import RobustnessConfig, robustness_metrics
    from raysparse.tasks.classification import Classification

    model, reference, test = _trained_and_reference()
    cfg = RobustnessConfig(corruptions=("impulse_noise", "contrast"), severities=(3, 5), noise_eps=(0.05, 0.6))
    cpu = torch.device("cpu")
    compared = robustness_metrics(model, test, cfg, cpu, reference=reference)
    alone = {name: robustness_metrics(net, test, cfg, cpu) for name, net in (("model", model), ("dense", reference))}
    x, y = test.tensors()
    clean = {name: Classification().evaluate(net, [(x, y)], cpu)["accuracy"]
             for name, net in (("model", model), ("dense", reference))}
    # excess = (clean - corrupted accuracy of the model) - (the same of the reference). The corrupted accuracies
    # are the suite's own (the same forward passes), so excess + corrupted(model) - corrupted(dense) is the gap
    # between the clean accuracies the suite measured: one and the same gap for every corruption ...
    clean_gaps = [excess + alone["model"]["corrupted_accuracy"][key] - alone["dense"]["corrupted_accuracy"][key]
                  for key, excess in compared["excess_error"].items()]
    assert len(clean_gaps) == 4 and max(clean_gaps) - min(clean_gaps) < 1e-6  # float32 means
    # ... and the gap `evaluate` measures, to one example: the suite's passes are other computations (images
    # un-normalized and normalized again, batches of 250, softmax), so an example whose top two logits nearly
    # tie may go the other way there
    assert clean_gaps[0] == pytest.approx(clean["model"] - clean["dense"], abs=1.5 / len(y))
    assert any(excess != 0 for excess in compared["excess_error"].values())
    assert compared["corrupted_accuracy"] == alone["model"]["corrupted_accuracy"]
    accuracy = alone["model"]["noise_accuracy"]
    assert accuracy["eps_0.6"] < accuracy["eps_0.05"]  # a larger ball costs accuracy
    assert "excess_error" not in alone["model"] and "noise_agreement" not in alone["model"]


def test_bad_robustness_block_names_the_field():
    cfg = small_config()
    cfg["robustness"] = {"corruptions": ["fog_of_war"]}
    with pytest.raises(ConfigError, match=r"robustness\.corruptions: unknown corruption 'fog_of_war'"):
        fit(cfg)
    cfg["robustness"] = {"severities": [0]}
    with pytest.raises(ConfigError, match=r"robustness\.severities"):
        fit(cfg)
    cfg["robustness"] = {"split": "train"}
    with pytest.raises(ConfigError, match=r"robustness\.split: unknown split 'train'.*test, val"):
        fit(cfg)
    cfg["robustness"], cfg["data"]["val_fraction"] = {"split": "val"}, 0.0
    with pytest.raises(ConfigError, match=r"data\.val_fraction: got 0\.0.*> 0 when robustness\.split is val"):
        fit(cfg)


def test_val_split_robustness_is_measured_on_validation_data():
    from raysparse.config import load_config
    from raysparse.robustness.evaluate import robustness_metrics
    from raysparse.zoo import build_data

    cfg = small_config("gmp")
    cfg["robustness"] = {"corruptions": ["gaussian_noise"], "severities": [5], "split": "val"}
    model = build_model(cfg["model"], (1, 8, 8), 10)
    final = []
    fit(cfg, lambda m, ctx: final.append(m), model=model)
    data, robustness = build_data(cfg["data"], cfg["seed"]), load_config(cfg).robustness
    on = {name: robustness_metrics(model, getattr(data, name), robustness, torch.device("cpu"))["ece"]
          for name in ("val", "test")}
    assert on["val"] != on["test"]
    assert final[-1]["ece"] == pytest.approx(on["val"])


def test_sweep_potential_rows_use_dense_as_reference():
    import pandas as pd

    from raysparse.report import sweep_potential_rows

    trials = pd.DataFrame([
        {"status": "FINISHED", "params.sparsity.method": "dense", "metrics.density": 1.0,
         "metrics.test_accuracy": 0.9, "metrics.corrupted_accuracy.contrast_5": 0.5},
        {"status": "FINISHED", "params.sparsity.method": "gmp", "metrics.density": 0.1,
         "metrics.test_accuracy": 0.899, "metrics.corrupted_accuracy.contrast_5": 0.3},
        {"status": "KILLED", "params.sparsity.method": "gmp", "metrics.density": 0.05,
         "metrics.test_accuracy": 0.2, "metrics.corrupted_accuracy.contrast_5": 0.1},
    ])
    rows = sweep_potential_rows(trials)
    assert {(r["method"], r["sparsity"], r["distribution"]) for r in rows} == {
        ("dense", 0.0, "clean"), ("dense", 0.0, "contrast_5"), ("gmp", 0.9, "clean"), ("gmp", 0.9, "contrast_5")}
    with pytest.raises(ConfigError, match="no finished dense reference"):
        sweep_potential_rows(trials[trials["params.sparsity.method"] != "dense"])
