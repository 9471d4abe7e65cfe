"""What Tune sees of a report: every objective in every result, even those measured only at the end."""

import math
from types import SimpleNamespace

from raysparse.search.trial import tune_metrics


def test_deployed_latency_is_nan_for_tune_until_the_last_report_measures_it():
    context = SimpleNamespace(masks=SimpleNamespace(content_hash=lambda: "abc"))
    during = tune_metrics({"val_accuracy": 0.5, "latency_dense_ms_b64": 2.0, "layer_density": {"fc": 0.1}}, context)
    assert math.isnan(during["latency_ms_b64"]) and during["latency_dense_ms_b64"] == 2.0
    assert "layer_density" not in during and during["mask_hash"] == "abc"
    last = tune_metrics({"val_accuracy": 0.6, "latency_ms_b64": 0.7, "latency_ms_b1": 0.1}, context)
    assert last["latency_ms_b64"] == 0.7 and last["latency_ms_b1"] == 0.1
