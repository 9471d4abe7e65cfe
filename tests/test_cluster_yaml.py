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


def test_mlflow_on_the_head_keeps_its_runs_in_postgresql_and_no_password_in_the_file(cluster):
    mlflow = next(c for c in cluster["head_start_ray_commands"] if "mlflow server --host" in c)
    assert "postgresql+psycopg2://" in mlflow and "sqlite" not in mlflow
    assert "--artifacts-destination /mnt/shared/mlflow/artifacts" in mlflow
    setup = " ".join(cluster["head_setup_commands"])
    assert "raysparse[postgres]" in setup and "createdb --owner ubuntu mlflow" in setup  # the role is the OS user
    text = CLUSTER.read_text()
    import re

    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)  # no user:password@ in any URI
    assert "PGPASSWORD" not in text and "PASSWORD '" not in text.upper()  # nor in the environment or SQL
