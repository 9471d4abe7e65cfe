"""The driver's watchdog on real MLflow servers, for the cases a sweep-level test cannot stage
cheaply: an embedded server that cannot be started again, a server we do not own, and a server
whose database (a real PostgreSQL) stops while the server itself still answers /health."""

import json
import os
import re
import signal
import socket
import subprocess
import time

from raysparse.tracking.server import answers, ensure_local_server, stop_local_server, store_trouble
from raysparse.tracking.watchdog import ServerWatchdog

# a PostgreSQL cluster in a temporary directory and an `mlflow server` on it: the PostgreSQL
# store test's fixtures (module-scoped: this module's own cluster, which its test stops)
from tests.search.test_postgres_store import as_server_user, mlflow_on_postgres, pg_binary, postgres  # noqa: F401


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_embedded_server_stopped_on_purpose_is_lost_not_started_again(tmp_path):
    uri = ensure_local_server(tmp_path)
    with ServerWatchdog(uri, tmp_path, poll=0.2) as watchdog:
        stop_local_server(tmp_path)  # raysparse ui --stop
        wait_for(lambda: watchdog.lost is not None, 30, "the server declared lost")
    assert watchdog.lost == (f"the embedded MLflow server {uri} stopped answering and was not started again: "
                             "it was stopped on purpose (raysparse ui --stop)")
    assert watchdog.restarts == 0 and not answers(uri)


def test_embedded_server_whose_port_was_taken_is_lost_with_the_reason(tmp_path):
    uri = ensure_local_server(tmp_path)
    record = json.loads((tmp_path / "mlflow" / "server.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)
    with socket.socket() as squatter:  # another program listens on the port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_for(lambda: _binds(squatter, record["port"]), 10, "the killed server's port released")
        squatter.listen()
        with ServerWatchdog(uri, tmp_path, poll=0.2) as watchdog:
            wait_for(lambda: watchdog.lost is not None, 60, "the server declared lost")
    assert watchdog.lost.startswith(f"the embedded MLflow server {uri} stopped answering and was not started "
                                    "again: the embedded mlflow server exited with code ")
    assert watchdog.lost.endswith(f"its log: {tmp_path.resolve() / 'mlflow' / 'server.log'}")
    assert "\n" not in watchdog.lost  # one line: the server's log stays in server.log


def _binds(sock, port):
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_a_server_we_do_not_own_is_lost_after_its_grace_and_never_restarted():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://alice:hunter2@127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    with ServerWatchdog(uri, None, poll=0.2, give_up=1) as watchdog:
        wait_for(lambda: watchdog.lost is not None, 10, "the server declared lost")
    assert 1 <= time.monotonic() - started < 5
    assert watchdog.lost.startswith("the MLflow server http://***@127.0.0.1:") and "hunter2" not in watchdog.lost
    assert "not restarted" in watchdog.lost and watchdog.restarts == 0


def test_a_server_whose_database_stopped_is_lost_though_its_health_answers(mlflow_on_postgres, postgres):  # noqa: F811
    uri, _, server_log, _ = mlflow_on_postgres
    _, _, postgres_log = postgres
    their_uri = uri.replace("http://", "http://alice:hunter2@")  # no line may show the credentials
    probes = "GET /api/2.0/mlflow/experiments/search?max_results=1 HTTP/1.1\" 200"
    already = server_log.read_text(errors="replace").count(probes)
    with ServerWatchdog(their_uri, None, poll=0.2, give_up=2, store_every=0.2) as watchdog:
        # while the database answers, the watchdog's store queries succeed, and nothing is lost
        wait_for(lambda: server_log.read_text(errors="replace").count(probes) >= already + 15, 30,
                 "the watchdog's store queries answered")
        assert watchdog.lost is None
        subprocess.run(as_server_user([pg_binary("pg_ctl"), "-D", str(postgres_log.parent / "data"), "-m",
                                       "immediate", "stop"]), check=True, capture_output=True)
        stopped = time.monotonic()
        wait_for(lambda: watchdog.lost is not None, 60, "the store declared lost")
    assert time.monotonic() - stopped < 60
    assert answers(uri)  # /health still says OK: only a real query shows the store is gone
    assert store_trouble(uri) is not None
    assert re.fullmatch(r"the MLflow server http://\*\*\*@127\.0\.0\.1:\d+ answers but its tracking store has not "
                        r"for \d+ s \(experiments/search (answered HTTP 5\d\d|got no answer within 5 s)\)",
                        watchdog.lost), watchdog.lost
    assert watchdog.restarts == 0
