"""The driver's watch on its sweep's MLflow server (tracking/watchdog.py), and what Tune does about it.

Tune pickles its callbacks into the experiment state and a resumed driver unpickles them: they
can hold a sweep's name, not a thread, so they find this driver's watchdog by that name.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ray.tune import Callback

from raysparse.errors import DiskFull, TrackingServerLost
from raysparse.search.disk_watch import disk_full
from raysparse.tracking.watchdog import ServerWatchdog

_WATCHDOGS: dict[str, ServerWatchdog] = {}


@contextlib.contextmanager
def watch_tracking_server(sweep_name: str, uri: str, embedded_home: Path | None):
    """A watchdog on ``uri`` while the sweep runs; ``embedded_home``: the home whose embedded
    server ``uri`` is (restarted if it dies), None for a server the sweep was given."""
    with ServerWatchdog(uri, embedded_home) as watchdog:
        _WATCHDOGS[sweep_name] = watchdog
        try:
            yield watchdog
        finally:
            _WATCHDOGS.pop(sweep_name, None)


def server_lost(sweep_name: str) -> str | None:
    """Why the sweep's server is gone for good, or None (also when nothing watches it)."""
    watchdog = _WATCHDOGS.get(sweep_name)
    return None if watchdog is None else watchdog.lost


class StopWhenServerLost(Callback):
    """Ends Tune's loop once the sweep's server is lost or a disk it writes is full, by an
    exception, as a killed driver ends: the experiment state then keeps unfinished trials
    unfinished for ``--resume`` (stopping the experiment the Tune way would record them as
    terminated, and a resume would skip them)."""

    def __init__(self, sweep_name: str):
        self.sweep_name = sweep_name

    def on_step_begin(self, iteration, trials, **info):
        lost = server_lost(self.sweep_name)
        if lost is not None:
            raise TrackingServerLost(lost)
        full = disk_full()  # stops as a lost server does: the experiment state keeps its trials unfinished
        if full is not None:
            raise DiskFull(full)
