"""A tracking URI with credentials: the secret reaches MLflow's environment variables and no output,
file, param, tag or artifact of the sweep (real CLI sweep, real MLflow server, real Ray)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from raysparse.tracking import ensure_local_server, load_sweep, stop_local_server
from raysparse.tracking.credentials import PASSWORD, USERNAME, without_credentials
from tests.conftest import small_config

SECRET = "S3cretPassw0rd"


def test_credentials_leave_the_uri_for_mlflows_environment(monkeypatch):
    monkeypatch.delenv(USERNAME, raising=False)
    monkeypatch.delenv(PASSWORD, raising=False)
    assert without_credentials("http://alice:S3cret%40x@host:5000/path") == "http://host:5000/path"
    assert (os.environ[USERNAME], os.environ[PASSWORD]) == ("alice", "S3cret@x")
    assert without_credentials("http://[::1]:5000") == "http://[::1]:5000"
    assert without_credentials("http://bob:pw@[::1]:5000") == "http://[::1]:5000"
    assert without_credentials("sqlite:///tmp/mlflow.db") == "sqlite:///tmp/mlflow.db"


def test_a_sweep_with_credentials_in_its_uri_stores_and_prints_no_secret(tmp_path):
    home = tmp_path / "home"
    server = ensure_local_server(home)
    try:
        host = server.removeprefix("http://")
        base = {**small_config("gmp"), "epochs": 2, "measure_latency": False}
        sweep = {"name": "secret", "base": base, "space": {}, "num_samples": 1, "sampler": "random",
                 "early_stopping": False, "tracking_uri": f"http://alice:{SECRET}@{host}"}
        path = tmp_path / "secret.yaml"
        path.write_text(yaml.safe_dump(sweep))
        env = {**os.environ, "RAYSPARSE_HOME": str(home), "RAY_ADDRESS": "local"}
        env.pop(PASSWORD, None)
        cli = Path(sys.executable).parent / "raysparse"
        done = subprocess.run([str(cli), "sweep", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert SECRET not in done.stdout + done.stderr
        trials = load_sweep(server, "secret").trials
        assert list(trials["status"]) == ["FINISHED"]  # the runs were written without the URI's credentials
        path.unlink()  # the user's own file holds it; everything raysparse and MLflow wrote must not
        leaks = [str(f) for f in tmp_path.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
        assert leaks == []
    finally:
        stop_local_server(home)
