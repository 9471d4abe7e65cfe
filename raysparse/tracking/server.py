"""One local ``mlflow server`` per raysparse home, and checks on a user-given tracking URI.

Every writer goes through one server over HTTP: the file store is rejected by MLflow 3.x and a
SQLite file written by several trial processes at once fails with "database is locked". The
server proxies artifacts too, so trials on other nodes upload masks without a shared disk.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from raysparse.errors import ConfigError
from raysparse.tracking.naming import redact
from raysparse.tracking.store import check_store

_HEALTH_TIMEOUT = 2.0
# /health answers without touching the store (a server whose database died still says OK): the
# cheapest real query instead, one experiment. A database query may take longer than /health.
_STORE_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
_STORE_TIMEOUT = 5.0
# Popen objects of servers this process started: polling them reaps an exited child, so a
# zombie is not mistaken for a live server (and Python does not warn about a lost child).
_STARTED: dict[int, subprocess.Popen] = {}
# The local server is only ever reached on loopback, so an http_proxy in the environment must
# not route the health check elsewhere.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_home() -> Path:
    """``$RAYSPARSE_HOME`` if set, else ``~/.raysparse``."""
    return Path(os.environ.get("RAYSPARSE_HOME") or Path.home() / ".raysparse").expanduser()


def ensure_local_server(
    home: Path | None = None, *, port: int | None = None, host: str | None = None, timeout: float = 60
) -> str:
    """Return the URI of this home's MLflow server, starting it (detached) if none answers.

    The server (SQLite backend, artifacts proxied over HTTP) outlives the calling process and
    is reused by later calls, from any process, while its pid is alive and ``/health`` answers.
    ``port`` only applies when a server is started (a free one when None). It binds to ``host``,
    by default 127.0.0.1 only; a ``host`` other than the running server's is an error (stop it
    first). A file lock makes concurrent callers start one server between them. A server bound
    beyond loopback is returned with a warning on stderr each time, started or reused: whoever
    reaches that address can read and change every run.
    """
    state_dir = _state_dir(home)
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir / "server.lock"):
        record = _read_record(state_dir)
        if record and _alive(record["pid"]):
            if _healthy(_uri(record)):
                if host is not None and host != record["host"]:
                    raise ConfigError("--host", f"the embedded MLflow server already runs on {record['host']}:"
                                                f"{record['port']}; stop it (raysparse ui --stop) to bind it to {host}")
                return _warn_if_exposed(record)
            _stop_group(record["pid"])  # alive but not answering (the starter holds the lock): hung
        check_store(state_dir)  # a damaged store: one line now, not a server that exits with a traceback
        host = host or "127.0.0.1"
        # the same port as last time when it is free: a resumed sweep's callbacks hold that URI
        previous = record["port"] if record and record.get("host") == host else None
        port = port or (previous if previous and _port_free(host, previous) else _free_port(host))
        log_path = state_dir / "server.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                _server_command(state_dir, host, port),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: survives us, stops as one
                env=_server_env(),
                # python -m puts its working directory first on sys.path: the store's own directory,
                # not the user's, where a stray string.py would run in (and break) the server
                cwd=state_dir,
            )
        _STARTED[proc.pid] = proc
        record = {"pid": proc.pid, "port": port, "host": host}
        (state_dir / "server.json").write_text(json.dumps(record))
        try:
            _wait_until_healthy(proc, _uri(record), timeout, log_path)
        except ServerStartError:
            _stop_group(proc.pid)
            (state_dir / "server.json").unlink(missing_ok=True)
            check_store(state_dir, thorough=True, log=log_path)  # the likeliest cause, named
            raise
        return _warn_if_exposed(record)


def restart_local_server(home: Path | None, uri: str, timeout: float = 40) -> None:
    """Start ``home``'s server again at ``uri``, on the same port and store, after it died or hung:
    the trials of a running sweep hold that URI. RuntimeError when it cannot: it was stopped on
    purpose (``raysparse ui --stop``), another one took its place, or it does not come up in
    ``timeout`` s (the port taken meanwhile, say)."""
    record = _read_record(_state_dir(home))
    if record is None:
        raise RuntimeError("it was stopped on purpose (raysparse ui --stop)")
    if _uri(record) != uri:
        raise RuntimeError(f"this home's server now runs at {_uri(record)}")
    ensure_local_server(home, port=record["port"], host=record["host"], timeout=timeout)


def local_server_alive(home: Path | None = None) -> bool:
    """Whether the process of ``home``'s server runs (answering or not)."""
    record = _read_record(_state_dir(home))
    return bool(record) and _alive(record["pid"])


def answers(uri: str) -> bool:
    """Whether the MLflow server at ``uri`` answers ``/health`` now (credentials in the URI are sent)."""
    return _health_ok(_opener(uri), _request(uri, "/health"))


def store_trouble(uri: str) -> str | None:
    """None when the tracking store behind the MLflow server at ``uri`` answers a real query (one
    experiment) within 5 s; else why not, in a few words. An HTTP 4xx is an answer: the server
    asked the store, or refused us (credentials, Host) without asking it, which is not the
    store's fault; a 5xx, a timeout or no connection is not."""
    try:
        with _opener(uri).open(_request(uri, _STORE_PROBE), timeout=_STORE_TIMEOUT):
            return None
    except urllib.error.HTTPError as error:
        return None if error.code < 500 else f"experiments/search answered HTTP {error.code}"
    except TimeoutError:
        return f"experiments/search got no answer within {_STORE_TIMEOUT:g} s"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError):
            return f"experiments/search got no answer within {_STORE_TIMEOUT:g} s"
        return f"experiments/search failed: {reason}"


def stop_local_server(home: Path | None = None) -> bool:
    """Stop the server recorded for ``home`` (its whole process group); False if none was running."""
    state_dir = _state_dir(home)
    if not state_dir.is_dir():
        return False
    with _locked(state_dir / "server.lock"):
        record = _read_record(state_dir)
        (state_dir / "server.json").unlink(missing_ok=True)
        return bool(record) and _alive(record["pid"]) and _stop_group(record["pid"])


def check_tracking_uri(uri: str, field: str = "tracking_uri") -> None:
    """Fail early, naming ``field``, unless ``uri`` is an MLflow server that answers ``/health``.

    Only http(s) servers are accepted: concurrent trials cannot share a file store or SQLite file.
    """
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    instead = f"give the http(s) URI of an `mlflow server` or omit {field} to use the embedded server"
    shown = redact(uri)  # the error is printed: no credentials in it
    if scheme in ("", "file"):
        raise ConfigError(field, f"{shown!r} is a file store, which MLflow 3.x rejects and concurrent trials "
                                 f"cannot share; {instead}")
    if scheme == "sqlite":
        raise ConfigError(field, f"{shown!r}: concurrent trials writing one SQLite file fail with 'database is "
                                 f"locked'; serve it with `mlflow server --backend-store-uri {shown}` and {instead}")
    if scheme not in ("http", "https"):
        raise ConfigError(field, f"{shown!r} has scheme {scheme!r}; {instead}")
    try:
        with urllib.request.urlopen(_request(uri, "/health"), timeout=5):
            return
    except urllib.error.HTTPError as error:
        reason = f"/health answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise ConfigError(field, f"MLflow tracking server {shown!r} cannot be reached ({reason}); start it or omit "
                             f"{field} to use the embedded server")


def _opener(uri: str) -> urllib.request.OpenerDirector:
    loopback = urllib.parse.urlsplit(uri).hostname in ("127.0.0.1", "localhost", "::1")
    return _LOOPBACK_OPENER if loopback else urllib.request.build_opener()


def _request(uri: str, path: str) -> urllib.request.Request:
    """GET <uri><path> (path may carry a query); credentials in the URI (``https://user:pass@host``,
    which MLflow's client accepts) become a basic-auth header, since urllib does not take them
    from the URL."""
    parts = urllib.parse.urlsplit(uri)
    credentials, _, host = parts.netloc.rpartition("@")
    path, _, query = path.partition("?")
    url = urllib.parse.urlunsplit(parts._replace(netloc=host, path=parts.path.rstrip("/") + path, query=query))
    request = urllib.request.Request(url)
    if credentials:
        user, _, password = credentials.partition(":")
        token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    return request


def _state_dir(home: Path | None) -> Path:
    return Path(home or default_home()).expanduser().resolve() / "mlflow"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _server_command(state_dir: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination", str(state_dir / "artifacts"),
        "--serve-artifacts",
        "--host", host, "--port", str(port),
        # one worker: SQLite serialises writes anyway, and each worker costs ~250 MB
        "--workers", "1",
        # MLflow's default accepts any private-network address on any port, so a page that rebinds
        # its DNS name to this machine, or a foreign Host header, gets through: only the names this
        # server is reached at, on its port
        "--allowed-hosts", ",".join(_allowed_hosts(host, port)),
    ]


def _allowed_hosts(host: str, port: int) -> list[str]:
    """The ``Host`` headers the embedded server bound to ``host``:``port`` accepts: its loopback
    names; beyond loopback also this machine's name and the address it binds (every local address
    for 0.0.0.0 / ::), each with the port; and whatever ``MLFLOW_SERVER_ALLOWED_HOSTS`` adds (a
    DNS alias of this machine, say)."""
    names = ["localhost", "127.0.0.1", "::1"]
    if not _loopback(host):
        names += [socket.gethostname(), socket.getfqdn()]
        names += sorted(_local_addresses()) if host in ("0.0.0.0", "::", "") else [host]
    patterns = [f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names]
    added = [name.strip() for name in os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS", "").split(",")]
    return list(dict.fromkeys(patterns + [name for name in added if name]))


def _local_addresses() -> set[str]:
    """This machine's addresses: what its name resolves to and, on Linux, every local IPv4 address
    (the kernel's routing trie marks them ``/32 host LOCAL``) and every IPv6 one."""
    found = set()
    with contextlib.suppress(OSError):
        found |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        found |= {above.split()[-1] for above, line in zip(lines, lines[1:]) if line.strip() == "/32 host LOCAL"}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    return {address for address in found if "%" not in address}  # a link-local scope is no Host header


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_if_exposed(record: dict) -> str:
    """``record``'s URI, after a warning when the server listens beyond loopback."""
    if not _loopback(record["host"]):
        address = f"[{record['host']}]" if ":" in record["host"] else record["host"]
        print(f"raysparse: the embedded MLflow server {_uri(record)} listens on {address}:{record['port']}: whoever "
              "reaches this machine there can read and change every run (it has no authentication); stop it with: "
              "raysparse ui --stop", file=sys.stderr, flush=True)
    return _uri(record)


def _server_env() -> dict[str, str]:
    # The job runner serves GenAI evaluation jobs; it adds ~8 processes and ~600 MB we never use.
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _uri(record: dict) -> str:
    host = record["host"]
    if host in ("0.0.0.0", "::", ""):  # bound to every interface: reach it on loopback from here
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{record['port']}"


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, even if we crash
        yield


def _read_record(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / "server.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running mlflow server we may reuse or stop."""
    if pid in _STARTED:
        return _STARTED[pid].poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or someone else's: not ours either way
        return False
    # a recycled pid must not be mistaken for the server (and its process group killed)
    with contextlib.suppress(OSError):
        return b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return True


def _healthy(uri: str) -> bool:
    return _health_ok(_LOOPBACK_OPENER, uri + "/health")


def _health_ok(opener: urllib.request.OpenerDirector, request: urllib.request.Request | str) -> bool:
    try:
        with opener.open(request, timeout=_HEALTH_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, http.client.HTTPException):  # a server killed mid-answer, too
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerStartError(RuntimeError):
    """The embedded server did not come up; the message is one line with its log's path (the
    log holds the details: tracebacks, not for a terminal)."""


def _wait_until_healthy(proc: subprocess.Popen, uri: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"the embedded mlflow server exited with code {proc.returncode} at start-up; "
                                   f"its log: {log_path}")
        if _healthy(uri):
            return
        time.sleep(0.25)
    raise ServerStartError(f"the embedded mlflow server did not answer {uri}/health within {timeout:g} s; "
                           f"its log: {log_path}")


def _stop_group(pid: int, grace: float = 15) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` s; False if it was gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    if _group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    if pid in _STARTED:
        _STARTED.pop(pid).wait()
    return True


def _group_alive(pgid: int) -> bool:
    if pgid in _STARTED:
        _STARTED[pgid].poll()  # reap our own leader, so its zombie does not keep the group alive
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
