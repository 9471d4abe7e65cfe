"""A real two-node Ray cluster on this machine (`ray start --head`, then `ray start --address`),
token auth on, one shared storage path: sweeps on both nodes, Jobs API submit / logs / stop, and
clients without the token refused."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow import MlflowClient

from raysparse.tracking import load_sweep
from tests.search.conftest import tiny_sweep

VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, root: Path):
        # short paths (Ray's socket paths have a length limit); one per node, as on separate machines:
        # nodes sharing a temp dir unpack a job's working directory over each other's
        self.root, self.temp, self.worker_temp = root, root / "ray", root / "ray2"
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.token = secrets.token_hex(16)
        self.env = {
            **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",  # jobs run `python` on the head: this venv's
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str):
        subprocess.run([f"{VENV_BIN}/ray", *args], env=self.env, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.ray("start", "--head", "--port", str(self.gcs_port), "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                 "--temp-dir", str(self.temp), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(self.dashboard_port))
        self.ray("start", "--address", self.address, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                 "--temp-dir", str(self.worker_temp))
        deadline = time.monotonic() + 60
        while self.alive_nodes() < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(1)

    def alive_nodes(self) -> int:
        probe = "import ray; ray.init(address='auto'); print(sum(n['Alive'] for n in ray.nodes()))"
        done = subprocess.run([sys.executable, "-c", probe], env={**self.env, "RAY_ADDRESS": self.address},
                              capture_output=True, text=True, timeout=120)
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0

    def stop(self) -> None:
        """Only this cluster's processes (`ray stop` would stop every Ray on the machine)."""
        marks = (str(self.temp), str(self.worker_temp), f":{self.gcs_port}")
        roots = [p for p in psutil.process_iter(["cmdline"])
                 if any(m in arg for arg in (p.info["cmdline"] or []) for m in marks)]
        doomed = set(roots)
        for process in roots:
            try:
                doomed.update(process.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for process in doomed:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(doomed), timeout=20)


@pytest.fixture(scope="module")
def cluster():
    root = Path(f"/tmp/rs-cluster-{secrets.token_hex(3)}")
    root.mkdir()
    running = Cluster(root)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_uri(tracking_uri):
    """The session's MLflow server: the sweeps are given it, as a user gives a server of theirs."""
    return tracking_uri


def cli(cluster, *args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "raysparse.cli", *args], env=env or cluster.env,
                          capture_output=True, text=True, timeout=timeout)


def sweep_file(folder: Path, name: str, **changes) -> Path:
    raw = tiny_sweep(name, num_samples=2, max_concurrent=2, **changes)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.5, 0.8]}}
    raw["sampler"] = "grid"
    del raw["num_samples"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_sweep_runs_its_trials_on_both_nodes(cluster, mlflow_uri, tmp_path):
    path = sweep_file(tmp_path, "two-nodes")
    done = cli(cluster, "sweep", str(path), "--address", cluster.address, "--tracking-uri", mlflow_uri,
               "--storage-path", str(cluster.root / "shared"))
    assert done.returncode == 0, done.stderr[-3000:]
    data = load_sweep(mlflow_uri, "two-nodes")
    assert list(data.trials["status"]) == ["FINISHED", "FINISHED"]
    client = MlflowClient(mlflow_uri)
    nodes = {client.get_run(run_id).data.tags["raysparse.node_id"] for run_id in data.trials["run_id"]}
    assert len(nodes) == 2  # one trial per node: each node has one CPU, a trial takes one
    assert (cluster.root / "shared" / "two-nodes" / "raysparse_sweep.json").is_file()


def test_submit_follows_the_job_to_the_end_and_stop_stops_one(cluster, mlflow_uri, tmp_path):
    path = sweep_file(tmp_path, "submitted")
    done = cli(cluster, "submit", str(path), "--address", cluster.dashboard, "--working-dir", str(tmp_path),
               "--tracking-uri", mlflow_uri, "--storage-path", str(cluster.root / "shared"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = done.stdout.split("as job ")[1].split(":")[0]
    assert "best trial" in done.stdout and done.stdout.rstrip().endswith(f"job {job_id}: SUCCEEDED")
    assert cluster.token not in done.stdout  # the token stays in the environment
    assert list(load_sweep(mlflow_uri, "submitted").trials["status"]) == ["FINISHED", "FINISHED"]
    logs = cli(cluster, "job", "logs", job_id, "--address", cluster.dashboard)
    assert "best trial" in logs.stdout

    long = sweep_file(tmp_path, "stopped")
    raw = yaml.safe_load(long.read_text())
    raw["base"]["epochs"] = 500
    long.write_text(yaml.safe_dump(raw))
    started = cli(cluster, "submit", str(long), "--address", cluster.dashboard, "--working-dir", str(tmp_path),
                  "--tracking-uri", mlflow_uri, "--storage-path", str(cluster.root / "shared"), "--no-follow")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split("as job ")[1].split(":")[0]
    deadline = time.monotonic() + 180

    def training():  # both trials past their first epoch
        found = MlflowClient(mlflow_uri).get_experiment_by_name("stopped")
        runs = MlflowClient(mlflow_uri).search_runs([found.experiment_id], "tags.`raysparse.role` = 'trial'") \
            if found else []
        return len(runs) == 2 and all(r.data.metrics.get("epoch", 0) >= 1 for r in runs)

    while not training():
        assert time.monotonic() < deadline, "the submitted sweep never started training"
        time.sleep(1)
    stopped = cli(cluster, "job", "stop", job_id, "--address", cluster.dashboard)
    assert stopped.stdout.strip() == f"job {job_id}: STOPPED"
    data = load_sweep(mlflow_uri, "stopped")  # the stopped driver closed its runs on the way out
    assert data.parent_status == "KILLED" and list(data.trials["status"]) == ["KILLED", "KILLED"]
    assert set(data.trials["failure_reason"]) == {"stopped with the sweep (raysparse sweep --resume stopped)"}
    assert "raysparse sweep --resume stopped" in cli(cluster, "job", "logs", job_id, "--address",
                                                     cluster.dashboard).stdout


def test_clients_without_the_token_are_refused(cluster, tmp_path):
    connect = f"import ray; ray.init(address='{cluster.address}'); print('connected')"
    no_token = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    for env in (no_token, {**cluster.env, "RAY_AUTH_TOKEN": "not-the-token"}):
        done = subprocess.run([sys.executable, "-c", connect], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "connected" not in done.stdout
        assert "AuthenticationError" in done.stderr or "Failed to connect" in done.stderr
    refused = cli(cluster, "job", "status", "raysubmit_none", "--address", cluster.dashboard, env=no_token)
    assert refused.returncode == 2 and "needs the cluster's Ray token" in refused.stderr
    assert "Traceback" not in refused.stderr
