"""cluster.yaml is checked by Ray's own cluster-launcher validation (its JSON schema, after Ray
fills in the provider's defaults, as `ray up` does), plus what our set-up relies on."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture
def cluster():
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_validates_the_cluster_config(cluster):
    validate_config(prepare_config(copy.deepcopy(cluster)))  # raises on any schema violation


def test_ray_validation_is_real_a_misspelled_key_fails(cluster):
    cluster["available_node_types"]["gpu_worker"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(cluster))


def test_gpu_workers_autoscale_and_every_ray_start_has_token_auth(cluster):
    nodes = cluster["available_node_types"]
    assert nodes[cluster["head_node_type"]]["resources"] == {"CPU": 0}  # trials never land on the head
    assert nodes["gpu_worker"]["min_workers"] == 0 < nodes["gpu_worker"]["max_workers"] <= cluster["max_workers"]
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert cluster["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"  # the token, not in the file
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert any("pip install" in c and "raysparse" in c for c in cluster["setup_commands"])
    mlflow = next(c for c in cluster["head_start_ray_commands"] if "mlflow server --host" in c)
    assert "0.0.0.0" not in mlflow and "/mnt/shared" in mlflow


def test_the_cluster_runs_the_ray_this_machine_submits_with(cluster):
    import re

    import ray

    pinned = [m for c in cluster["setup_commands"] for m in re.findall(r"ray\[[\w,]+\]==([\d.]+)", c)]
    assert pinned == [ray.__version__]  # a driver and a cluster on different Rays do not connect
