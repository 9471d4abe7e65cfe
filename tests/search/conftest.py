import pytest


@pytest.fixture(scope="package")
def home(tmp_path_factory):
    """One embedded MLflow server and Ray results folder for the search tests."""
    from raysparse.tracking import stop_local_server

    path = tmp_path_factory.mktemp("raysparse_home")
    yield path
    stop_local_server(path)


@pytest.fixture(scope="package")
def ray_runtime():
    """A real local Ray runtime with 2 CPUs, bound to loopback, token auth on (Ray's default)."""
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
