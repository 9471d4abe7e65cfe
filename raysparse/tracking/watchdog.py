"""A driver thread that watches the MLflow server a sweep's trials write to.

Without it a dead server hangs a sweep: trials sit in their client's retries and the driver
waits for them. The embedded server (SQLite store and artifacts under ``RAYSPARSE_HOME/mlflow``)
is ours: it is started again on the same port and store, so the trials' bounded retries (see
``raysparse.tracking``) reach it and whatever they had queued is logged. A server the sweep was
given, or one that cannot be started again, is declared lost: the driver stops the sweep, which
``raysparse sweep --resume NAME`` continues once the server answers. A server whose store (its
database) stopped answering still says OK on ``/health``: each poll also asks the store for one
experiment, and a store silent as long is lost too, never restarted (a restart brings no database
back, and on a deleted SQLite file would start an empty store under the trials).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from raysparse.tracking.naming import redact
from raysparse.tracking.server import answers, local_server_alive, restart_local_server, store_trouble

POLL_SECONDS = 1.0
# a server that answers nothing for this long is hung or gone; well within the trials' ~1 min of retries
GIVE_UP_SECONDS = 10.0
# a query costs the server ~5 ms of CPU (/health ~1 ms): a healthy store is asked this often, one
# that failed at every poll
STORE_EVERY_SECONDS = 5.0


class ServerWatchdog:
    """Polls ``uri``'s ``/health`` every ``poll`` s and its store every ``store_every`` s. ``home``:
    the raysparse home whose embedded server ``uri`` is (restarted when it dies), None for a server
    we do not own (never restarted). ``lost`` is then the one-line reason the server or its store
    is gone for good; ``restarts`` counts restarts."""

    def __init__(self, uri: str, home: Path | None, *, poll: float = POLL_SECONDS, give_up: float = GIVE_UP_SECONDS,
                 store_every: float = STORE_EVERY_SECONDS):
        self.uri, self.home, self.poll, self.give_up, self.store_every = uri, home, poll, give_up, store_every
        self.lost: str | None = None
        self.restarts = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="raysparse-server-watchdog", daemon=True)

    def __enter__(self) -> ServerWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _watch(self) -> None:
        silent_since = store_silent_since = None
        store_asked = float("-inf")
        while self.lost is None and not self._stopped.wait(self.poll):
            if answers(self.uri):
                silent_since = None
                if store_silent_since is None and time.monotonic() - store_asked < self.store_every:
                    continue
                store_asked = time.monotonic()
                trouble = store_trouble(self.uri)
                store_silent_since = None if trouble is None else store_silent_since or store_asked
                if trouble is not None and time.monotonic() - store_silent_since >= self.give_up:
                    self.lost = (f"the {'embedded ' if self.home else ''}MLflow server {redact(self.uri)} answers but "
                                 f"its tracking store has not for {time.monotonic() - store_silent_since:.0f} s "
                                 f"({trouble})")
                continue
            store_silent_since = None
            silent_since = silent_since or time.monotonic()
            silent = time.monotonic() - silent_since
            if self.home is None:
                if silent >= self.give_up:
                    self.lost = (f"the MLflow server {redact(self.uri)} has not answered for {silent:.0f} s (it is not "
                                 f"raysparse's embedded server, so it is not restarted)")
            elif silent >= self.give_up or not local_server_alive(self.home):  # dead: at once; silent: hung
                self._restart()
                silent_since = None

    def _restart(self) -> None:
        try:
            restart_local_server(self.home, self.uri)
        except (RuntimeError, OSError, ValueError) as err:  # ValueError: ConfigError (another host took it)
            reason = str(err).splitlines()[0]
            self.lost = (f"the embedded MLflow server {redact(self.uri)} stopped answering and was not started "
                         f"again: {reason}")
            return
        self.restarts += 1
        print(f"raysparse: the embedded MLflow server {self.uri} stopped answering; started again on its port and "
              f"store, the trials go on", file=sys.stderr, flush=True)
