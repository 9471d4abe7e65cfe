"""MLflow's tracking store on a real PostgreSQL server, as on a cluster's head (cluster.yaml): a
server from Debian's package (``make postgres``) in a temporary directory, a role with a password
read from a libpq password file (never in a URI, an argv or a log line), an ``mlflow server`` on
it, and a sweep of 8 trials at a time logging through it."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

import raysparse
from raysparse.tracking import load_sweep
from tests.search.conftest import logged_steps, tiny_sweep

PASSWORD = "pg-" + os.urandom(12).hex()  # what must appear nowhere but in the password file
ROLE, DATABASE, TRIALS = "raysparse", "mlflow", 8


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(f"{name} not found: `make postgres` installs Debian's postgresql")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as the package's ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def wait_until(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s; log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster on 127.0.0.1 (no Unix socket), password (SCRAM) authentication only;
    yields (port, password file); stopped and removed afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="raysparse-pg-"))  # not under pytest's root-only tmp: the server user reads it
    data, port = root / "data", free_port()
    secret = root / "superuser-password"
    secret.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        server_user = pwd.getpwnam("postgres")
        for path in (root, secret):
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
    secret.chmod(0o600)
    subprocess.run(as_server_user([pg_binary("initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={secret}",
                                   "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"]),
                   check=True, capture_output=True)
    secret.unlink()
    log = root / "postgres.log"
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' -c max_connections=100"
    subprocess.run(as_server_user([pg_binary("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                   "-w", "-t", "60", "start"]), check=True, capture_output=True)
    passfile = root / "pgpass"  # libpq's format, read by the MLflow server's driver (psycopg2)
    passfile.write_text(f"127.0.0.1:{port}:*:{ROLE}:{PASSWORD}\n")
    passfile.chmod(0o600)  # libpq ignores a password file others can read
    try:
        subprocess.run([pg_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, DATABASE],
                       check=True, capture_output=True, env={**os.environ, "PGPASSFILE": str(passfile)})
        yield port, passfile, log
    finally:
        subprocess.run(as_server_user([pg_binary("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    """``mlflow server`` with the store in PostgreSQL (the URI names no password: libpq reads it
    from PGPASSFILE) and artifacts in a directory, as cluster.yaml starts it. The URI names the
    driver: SQLAlchemy 2.1 takes a bare ``postgresql://`` for psycopg 3, which we do not install."""
    port, passfile, _ = postgres
    artifacts, log = tmp_path_factory.mktemp("pg_artifacts"), tmp_path_factory.mktemp("pg_server") / "server.log"
    http_port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(http_port),
            "--backend-store-uri", f"postgresql+psycopg2://{ROLE}@127.0.0.1:{port}/{DATABASE}",
            "--artifacts-destination", str(artifacts), "--workers", "2"]
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PGPASSFILE": str(passfile)})
    uri = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: answers(uri) or server.poll() is not None, 120, "the MLflow server on PostgreSQL", log)
        assert server.poll() is None, log.read_text()[-3000:]
        yield uri, server, log, artifacts
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def test_eight_trials_at_a_time_log_every_run_metric_and_artifact_and_the_password_nowhere(
        ray_runtime, mlflow_on_postgres, postgres, home, capfd):
    uri, server, server_log, artifacts = mlflow_on_postgres
    raw = tiny_sweep("on_postgres", num_samples=TRIALS, max_concurrent=TRIALS, tracking_uri=uri,
                     resources={"cpus_per_worker": 0.25})  # 8 trial processes on this 2-CPU Ray
    raw["base"]["epochs"] = 2
    raw["base"]["sparsity"].update(prune_end=2)
    result = raysparse.sweep(raw, home=home, verbose=False)
    argvs = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]  # while all still run

    data = load_sweep(uri, "on_postgres")
    assert data.parent_status == "FINISHED" and len(data.trials) == TRIALS
    assert (data.trials["status"] == "FINISHED").all(), data.trials["status"].value_counts()
    assert result.to_dataframe()["run_id"].sort_values().tolist() == data.trials["run_id"].sort_values().tolist()
    client = MlflowClient(uri)
    for run_id in data.trials["run_id"]:
        assert logged_steps(uri, run_id) == dict.fromkeys(("epoch", "train_loss", "val_accuracy", "density"), [1, 2])
        files = {f.path for folder in ("masks", "model", "plots") for f in client.list_artifacts(run_id, folder)}
        assert {"masks/lineage.jsonl", "masks/final.bin", "model/state_dict.pt"} <= files, files
        # the artifacts are files on the artifact store's disk, the rows in PostgreSQL
        assert list(artifacts.glob(f"*/{run_id}/artifacts/masks/final.bin"))
    # ... and really in PostgreSQL: its tables hold the runs (read with the server's own driver)
    import psycopg2

    port, passfile, postgres_log = postgres
    with psycopg2.connect(host="127.0.0.1", port=port, user=ROLE, dbname=DATABASE, passfile=str(passfile)) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'")
            assert cursor.fetchone()[0] >= TRIALS + 1  # the trials and the sweep's parent run
    db.close()

    printed = "".join(capfd.readouterr())
    params_and_tags = [str(run.data.params) + str(run.data.tags)
                       for run in client.search_runs([data.experiment_id], max_results=1000)]
    for where, text in {"the server's log": server_log.read_text(errors="replace"),
                        "PostgreSQL's log": postgres_log.read_text(errors="replace"),
                        "a process's argv": "\n".join(argvs), "the sweep's output": printed,
                        "a run's params or tags": "\n".join(params_and_tags)}.items():
        assert PASSWORD not in text, where
