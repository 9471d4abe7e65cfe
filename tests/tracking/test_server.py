"""The embedded MLflow server: one per home, reused, stopped; and checks on a given tracking URI."""

import http.client
import json
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from raysparse.errors import ConfigError
from raysparse.tracking import check_tracking_uri, default_home, ensure_local_server, stop_local_server


def server_processes(home: Path) -> list[int]:
    """Pids whose command line mentions ``home``: the server and its uvicorn worker."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(home).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def health(uri: str) -> int:
    with urllib.request.urlopen(uri + "/health", timeout=5) as response:
        return response.status


def this_machines_address() -> str:
    """The address other machines reach this one at (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


def reachable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def status_with_host(uri: str, host: str) -> int:
    """The status of a real API call to the server at ``uri`` sent with ``Host: host`` (/health is
    exempt from MLflow's Host check: a query is not)."""
    address, port = urllib.parse.urlsplit(uri).hostname, urllib.parse.urlsplit(uri).port
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
        return connection.getresponse().status
    finally:
        connection.close()


def a_private_address_not_ours() -> str:
    """A private-network address this machine does not have (MLflow's default accepts every one)."""
    from raysparse.tracking.server import _local_addresses

    return next(f"10.{i}.{j}.254" for i in range(256) for j in range(256)
                if f"10.{i}.{j}.254" not in _local_addresses())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYSPARSE_HOME", str(tmp_path))
    assert default_home() == tmp_path
    monkeypatch.delenv("RAYSPARSE_HOME")
    assert default_home() == Path.home() / ".raysparse"


def test_server_is_started_once_reused_and_stopped(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RAYSPARSE_HOME", str(tmp_path))
    uris = []
    callers = [threading.Thread(target=lambda: uris.append(ensure_local_server())) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(uris) == 2 and uris[0] == uris[1] and uris[0].startswith("http://127.0.0.1:")
    assert health(uris[0]) == 200
    port, address = int(uris[0].rsplit(":", 1)[1]), this_machines_address()
    assert not address.startswith("127.") and not reachable(address, port)  # loopback only, unless asked
    # each server is started in its own session: one process group means one server was started
    assert len({os.getpgid(pid) for pid in server_processes(tmp_path)}) == 1

    record = json.loads((tmp_path / "mlflow" / "server.json").read_text())
    assert ensure_local_server(tmp_path) == uris[0]
    assert json.loads((tmp_path / "mlflow" / "server.json").read_text())["pid"] == record["pid"]
    check_tracking_uri(uris[0])  # a live server passes
    check_tracking_uri(uris[0].replace("http://", "http://user:pa%40ss@") + "/")  # with credentials too
    assert capfd.readouterr().err == ""  # a loopback server is no exposure: nothing to warn about
    # only the names it is reached at pass MLflow's Host check: a page that rebinds its DNS name
    # to 127.0.0.1 (or any foreign Host) is refused, a private address too (MLflow's default accepts those)
    assert status_with_host(uris[0], f"127.0.0.1:{port}") == 200
    assert status_with_host(uris[0], f"localhost:{port}") == 200
    assert status_with_host(uris[0], "evil.example") == 403
    assert status_with_host(uris[0], f"evil.example:{port}") == 403
    assert status_with_host(uris[0], f"{a_private_address_not_ours()}:{port}") == 403

    assert stop_local_server(tmp_path) is True
    assert not (tmp_path / "mlflow" / "server.json").exists()
    assert server_processes(tmp_path) == []
    with pytest.raises(OSError):
        health(uris[0])
    assert stop_local_server(tmp_path) is False


def test_server_that_does_not_come_up_in_time_is_killed_with_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="did not answer .*/health within 0.5 s") as caught:
        ensure_local_server(tmp_path, timeout=0.5)
    assert str(caught.value).endswith(f"; its log: {tmp_path.resolve() / 'mlflow' / 'server.log'}")
    assert "\n" not in str(caught.value)  # the log's path, not its tail: one line for the terminal
    assert not (tmp_path / "mlflow" / "server.json").exists()
    assert server_processes(tmp_path) == []


def test_a_server_that_exits_at_start_up_is_one_line_with_its_logs_path(tmp_path, capsys, monkeypatch):
    from raysparse.cli import main

    monkeypatch.setenv("RAYSPARSE_HOME", str(tmp_path))
    with socket.socket() as taken:  # the port asked for is in use: mlflow server exits at once
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        capsys.readouterr()
        status = main(["ui", "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    log = tmp_path.resolve() / "mlflow" / "server.log"
    assert status == 1 and len(err.splitlines()) == 1, err
    assert re.fullmatch(rf"raysparse: error: the embedded mlflow server exited with code \d+ at start-up; its log: "
                        rf"{re.escape(str(log))}\n", err)
    assert "address already in use" in log.read_text().lower()  # the details stay in the log
    assert server_processes(tmp_path) == []


def test_unreachable_server_is_a_config_error_naming_field_and_uri():
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError, match="cannot be reached") as caught:
        check_tracking_uri(uri, field="tracking.uri")
    assert caught.value.field == "tracking.uri"
    assert repr(uri) in str(caught.value) and "omit tracking.uri" in str(caught.value)
    with pytest.raises(ConfigError, match=r"'http://\*\*\*@127\.0\.0\.1:\d+' cannot be reached \(.*refused") as caught:
        check_tracking_uri(uri.replace("http://", "http://bob:s3cret@"))
    assert "s3cret" not in str(caught.value)  # errors are printed: the URI's credentials are not


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///tmp/mlruns", "file store"),
        ("/tmp/mlruns", "file store"),
        ("mlruns", "file store"),
        ("sqlite:///tmp/mlflow.db", "database is locked"),
        ("postgresql://db/mlflow", "scheme 'postgresql'; give the http"),
    ],
)
def test_non_server_uris_are_rejected(uri, reason):
    with pytest.raises(ConfigError, match=reason) as caught:
        check_tracking_uri(uri)
    assert caught.value.field == "tracking_uri"


def test_ui_binds_elsewhere_only_when_asked_and_says_so_each_time_it_is_reused(tmp_path, capfd):
    import subprocess
    import sys

    env = {**os.environ, "RAYSPARSE_HOME": str(tmp_path)}
    exposed = re.compile(r"raysparse: the embedded MLflow server http://127\.0\.0\.1:(\d+) listens on 0\.0\.0\.0:\1: "
                         r"whoever reaches this machine there can read and change every run \(it has no "
                         r"authentication\); stop it with: raysparse ui --stop")

    def ui(*args):
        return subprocess.run([sys.executable, "-m", "raysparse.cli", "ui", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    try:
        started = ui("--host", "0.0.0.0")
        assert started.returncode == 0, started.stderr
        uri = started.stdout.split()[2]
        assert reachable(this_machines_address(), int(uri.rsplit(":", 1)[1]))
        port = int(uri.rsplit(":", 1)[1])
        assert exposed.fullmatch(started.stderr.strip()), started.stderr
        again = ui("--host", "127.0.0.1")  # a server already runs on another address: say so, change nothing
        assert again.returncode == 2 and again.stderr.startswith("raysparse: error: --host: the embedded MLflow "
                                                                 "server already runs on 0.0.0.0")
        # every reuse says again where it listens: a sweep's (in this process), then `raysparse ui`
        capfd.readouterr()
        assert ensure_local_server(tmp_path) == uri
        assert exposed.fullmatch(capfd.readouterr().err.strip())
        reused = ui()  # without --host: the running one
        assert reused.stdout.split()[2] == uri and exposed.fullmatch(reused.stderr.strip()), reused.stderr
        # reached from elsewhere at this machine's address, not under a foreign or rebound name
        assert status_with_host(uri, f"{this_machines_address()}:{port}") == 200
        assert status_with_host(uri, f"127.0.0.1:{port}") == 200
        assert status_with_host(uri, f"evil.example:{port}") == 403
        assert status_with_host(uri, f"{a_private_address_not_ours()}:{port}") == 403
    finally:
        assert ui("--stop").stdout.strip() == "stopped"
