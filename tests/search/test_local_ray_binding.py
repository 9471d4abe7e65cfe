"""A local sweep is reachable from this machine only: every TCP socket that its Ray runtime (GCS,
raylet, object manager, workers, dashboard and runtime-env agents, metrics) and its MLflow
server listen on is a loopback address, and Ray's token auth stays on. The one exception, named
by its own test: the rendezvous store of a data-parallel (workers > 1) trial."""

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time

import psutil
import yaml

from raysparse.tracking import ensure_local_server
from tests.search.conftest import tiny_sweep

# what a local runtime always runs: were one missing from what we saw, the test would prove nothing
RAY_PARTS = {
    "gcs_server": lambda title: title.endswith("/gcs_server"),
    "raylet": lambda title: title.endswith("/raylet"),
    "dashboard agent": lambda title: title.startswith("ray::DashboardAgent"),
    "runtime-env agent": lambda title: title.startswith("ray::RuntimeEnvAgent"),
    "trial process": lambda title: title.startswith("ray::ImplicitFunc"),
}


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def title_of(process: psutil.Process) -> str:
    try:
        return (process.cmdline() or [process.name()])[0]
    except psutil.Error:  # it ended while we looked
        return ""


def listening(processes) -> dict[tuple[str, int], str]:
    """(address, port) -> the title of the process listening there."""
    found = {}
    for process in processes:
        try:
            title = title_of(process)
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found[(conn.laddr.ip, conn.laddr.port)] = title
        except psutil.Error:  # it ended while we looked
            continue
    return found


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants: this driver's Ray session only, not other sessions on the machine."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_a_local_sweep_listens_on_loopback_only(home, tmp_path):
    raw = tiny_sweep("loopback", sampler="grid", max_concurrent=1)  # one worker: no DDP rendezvous store
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    del raw["num_samples"]
    path = tmp_path / "loopback.yaml"
    path.write_text(yaml.safe_dump(raw))
    server = ensure_local_server(home)  # the sweep's, started here so the sweep reuses it
    # the CLI, as a user runs it: the driver starts the local Ray runtime itself, in its own process tree
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"  # files: a full pipe would stall the driver
    with out.open("w") as stdout, err.open("w") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "raysparse.cli", "sweep", str(path)],
                                  env={**os.environ, "RAYSPARSE_HOME": str(home)}, stdout=stdout, stderr=stderr)
    seen: dict[tuple[str, int], str] = {}
    auth_modes = set()
    deadline = time.monotonic() + 300
    while driver.poll() is None:  # sampled all along: a server may only live while a trial runs
        assert time.monotonic() < deadline, "the sweep did not end within 300 s"
        processes = tree(driver.pid)
        seen.update(listening(processes))
        for gcs in (p for p in processes if RAY_PARTS["gcs_server"](title_of(p))):
            with contextlib.suppress(psutil.Error):
                auth_modes.add(gcs.environ().get("RAY_AUTH_MODE", "unset"))
        time.sleep(0.2)
    assert driver.returncode == 0, err.read_text()[-3000:]
    assert "1 finished" in out.read_text()

    titles = set(seen.values())
    missing = [part for part, matches in RAY_PARTS.items() if not any(matches(t) for t in titles)]
    assert not missing, f"never saw {missing} listen; saw {sorted(titles)}"
    exposed = sorted(f"{title} on {ip}:{port}" for (ip, port), title in seen.items() if not is_loopback(ip))
    assert not exposed, "listening beyond loopback: " + "; ".join(exposed)
    assert auth_modes == {"token"}  # Ray's token auth is on for the local runtime

    record = json.loads((home / "mlflow" / "server.json").read_text())
    mlflow_sockets = listening(tree(record["pid"]))
    assert f"http://127.0.0.1:{record['port']}" == server and ("127.0.0.1", record["port"]) in mlflow_sockets
    assert all(is_loopback(ip) for ip, _ in mlflow_sockets), mlflow_sockets


def test_the_exception_a_data_parallel_trials_rendezvous_store_listens_on_every_interface():
    """With workers > 1, Ray Train's rank 0 hosts torch.distributed's TCPStore (its env://
    rendezvous, ray.train.torch.config) while the trial trains, and torch binds that store to
    every interface whatever MASTER_ADDR says: neither Ray 2.60 nor torch 2.14 has a setting for it.
    When this fails, torch binds the store to its host: drop the exception from the README."""
    from datetime import timedelta

    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=10))
    on = {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
          if c.status == psutil.CONN_LISTEN and c.laddr.port == store.port}
    assert on and not any(is_loopback(ip) for ip in on), on
