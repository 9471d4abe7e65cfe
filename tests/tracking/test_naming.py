"""Param and metric names as every run writes them."""

import numpy as np

from raysparse.tracking import flatten_metrics, flatten_params
from tests.tracking.conftest import CONFIG


def test_params_flatten_with_dots_and_long_values_are_truncated():
    flat = flatten_params({**CONFIG, "notes": "x" * 7000, "extra": {}})
    assert flat["sparsity.final_sparsity"] == "0.9" and flat["model.hidden"] == "[64, 32]"
    assert flat["extra"] == "{}"
    assert len(flat["notes"]) == 6000 and flat["notes"].endswith("...[truncated]")


def test_metric_names_are_dotted_and_sanitized():
    flat = flatten_metrics({"loss": np.float32(0.5), "ok": True, "layer_density": {"blocks/0:conv": 0.25}})
    assert flat == {"loss": 0.5, "ok": 1.0, "layer_density.blocks_0_conv": 0.25}


def test_trial_run_names_say_method_and_sparsity():
    from raysparse.tracking.naming import trial_run_name

    assert trial_run_name("1a2b", "granet", 0.95) == "granet-s0.95-1a2b"
    assert trial_run_name("1a2b", "dense", 0.9) == "dense-1a2b"


def test_credentials_in_uris_are_redacted_from_params():
    from raysparse.tracking.naming import redact

    flat = flatten_params({"tracking_uri": "https://alice:s3cret@mlflow.example:5000/x", "lr": 0.1})
    assert flat == {"tracking_uri": "https://***@mlflow.example:5000/x", "lr": "0.1"}
    assert redact("http://127.0.0.1:5000 and s3://bucket/path") == "http://127.0.0.1:5000 and s3://bucket/path"
