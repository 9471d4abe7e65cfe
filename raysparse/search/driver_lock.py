"""One driver per sweep: a lock file beside the sweep's resume state, on the storage a cluster shares.

Two drivers on one sweep name each closed and deleted the other's runs as their own lost trials.
The lock names its holder (host, pid, the process's start time); a holder that is gone does not
keep it: on the same host a pid that no longer runs, or now runs another process (its start time
differs), is dead, and the next driver takes the lock over. A holder on another host cannot be
checked from here: the sweep is refused, and the message says which file to remove if that
driver is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from raysparse.errors import ConfigError

LOCK_FILE = "raysparse_driver.lock"
_TORN_WAIT_S = 2.0  # a lock being written (created, not yet filled) is read again for this long


class SweepRunning(ConfigError):
    """Another driver runs the sweep: ``sweep 'NAME' is running: driver pid P on host H since T (...)``."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    process_started: float  # psutil's create_time: a pid reused by another process has another
    since: float  # when the lock was taken (epoch seconds)

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(), time.time())

    def described(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"driver pid {self.pid} on host {self.host} since {since}"


def lock_path(experiment_dir: Path) -> Path:
    return Path(experiment_dir) / LOCK_FILE


def check_not_running(experiment_dir: Path, name: str) -> None:
    """Refuses sweep ``name`` while a live driver holds its lock; reads only (nothing is created,
    a dead holder's lock is left for ``driver_lock`` to take over)."""
    path = lock_path(experiment_dir)
    holder = _read(path)
    if holder is not None and _alive(holder) is not False:
        raise _refusal(name, holder, path)


@contextlib.contextmanager
def driver_lock(experiment_dir: Path, name: str):
    """Holds sweep ``name``'s lock while the block runs, and releases it however the block ends
    (a SIGKILLed driver leaves it: the next start finds its holder dead)."""
    path = lock_path(experiment_dir)
    mine = _acquire(path, name)
    try:
        yield mine
    finally:
        _release(path, mine)


def _acquire(path: Path, name: str) -> Holder:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        mine = Holder.this_process()
        try:  # atomic: of two drivers creating it, one gets FileExistsError
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _take_over_if_dead(path, name)
            continue
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(asdict(mine)))
            file.flush()
            os.fsync(file.fileno())  # whole before anyone reads it on shared storage
        return mine


def _take_over_if_dead(path: Path, name: str) -> None:
    """Removes a lock whose holder is dead (with one line saying so); refuses a live or
    uncheckable one. Returns so that the caller creates the lock again."""
    text = _read_text(path)
    if text is None:  # released meanwhile
        return
    holder = _parse(text)
    if holder is None:  # not the JSON a driver writes, even after waiting for one being written
        why = f"a damaged lock ({str(path)!r} is not what a driver writes)"
    else:
        alive = _alive(holder)
        if alive is not False:
            raise _refusal(name, holder, path)
        why = f"the lock of {holder.described()}, which no longer runs"
    # moved aside, not deleted: a driver that took it over just before us has replaced it, and
    # its lock must stay (put back below)
    aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read_text(aside, wait=False) != text:  # not the lock judged dead: put it back, look again
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    print(f"raysparse: sweep {name!r}: took over {why}", file=sys.stderr, flush=True)


def _release(path: Path, mine: Holder) -> None:
    if _parse(_read_text(path, wait=False) or "") == mine:  # ours still (never another's)
        path.unlink(missing_ok=True)


def _alive(holder: Holder) -> bool | None:
    """True or False for a holder on this host; None for one on another (it cannot be checked)."""
    if holder.host != socket.gethostname():
        return None
    try:
        process = psutil.Process(holder.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - holder.process_started) < 0.05  # clock ticks: 0.01 s
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process, alive
        return True


def _refusal(name: str, holder: Holder, path: Path) -> SweepRunning:
    if holder.host == socket.gethostname():
        advice = f"one driver per sweep: wait for it to end or stop it; then raysparse sweep --resume {name}"
    else:
        advice = f"it cannot be checked from this host; if that driver is gone, remove {str(path)!r} and start again"
    return SweepRunning("", f"sweep {name!r} is running: {holder.described()} ({advice})")


def _read(path: Path) -> Holder | None:
    text = _read_text(path)
    return None if text is None else _parse(text)


def _read_text(path: Path, wait: bool = True) -> str | None:
    """The lock's text, None if there is none; a lock just created and still empty or partly
    written is read again for up to ``_TORN_WAIT_S`` (its JSON is written at once after)."""
    deadline = time.monotonic() + (_TORN_WAIT_S if wait else 0)
    while True:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        if _parse(text) is not None or time.monotonic() >= deadline:
            return text
        time.sleep(0.05)


def _parse(text: str) -> Holder | None:
    """The holder a driver wrote, or None for anything else (a pid or time no process can have)."""
    try:
        data = json.loads(text)
        holder = Holder(str(data["host"]), int(data["pid"]), float(data["process_started"]), float(data["since"]))
    except (ValueError, TypeError, KeyError):
        return None
    times_ok = all(0 <= t < 1e11 for t in (holder.process_started, holder.since))  # NaN fails too
    return holder if 0 < holder.pid < 2**31 and times_ok else None
