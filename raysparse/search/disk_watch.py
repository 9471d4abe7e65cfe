"""A full disk stops a sweep within seconds, in one line naming the path and its free space.

Without it a full disk takes minutes to end a sweep: each write fails in its own way (Tune's
uploads log and go on, trials retry, MLflow's server answers 500s that its clients retry). The
driver polls the free space of the disks it writes to, and a write that failed with ENOSPC in
this process (the sweep storage's writes, search/storage_fs.py) or in a trial (its error) says
so at once. The sweep then stops as for a lost server (server_watch.StopWhenServerLost).

The embedded MLflow store keeps a small reserve file on its disk, deleted when the disk fills:
the room to close the sweep's runs with the reason.
"""

from __future__ import annotations

import errno
import re
import shutil
import threading
from pathlib import Path

from raysparse.errors import ConfigError

POLL_SECONDS = 0.5
FULL_BYTES = 1 << 20  # less free than this: no checkpoint or state snapshot would fit
RESERVE_FILE = ".raysparse_reserve"
RESERVE_BYTES = 4 << 20

_reason: str | None = None
_lock = threading.Lock()
_NO_SPACE = re.compile(r"No space left on device(?:: '([^']+)')?")


def full_line(path: Path, free: int | None = None) -> str:
    free = _free(path) if free is None else free
    return f"the disk holding {str(path)!r} is full ({_size(free)} free)"


def report_full(path: Path) -> None:
    """A write to ``path`` found its disk full: the first such report stands."""
    global _reason
    with _lock:
        if _reason is None:
            _reason = full_line(path)


def report_error_text(text: str, fallback: Path) -> bool:
    """A trial's error that a full disk caused stops the sweep; True when it was one."""
    found = _NO_SPACE.search(text)
    if found is None and f"[Errno {errno.ENOSPC}]" not in text:
        return False
    report_full(Path(found.group(1)) if found is not None and found.group(1) else fallback)
    return True


def disk_full() -> str | None:
    return _reason


def clear() -> None:
    global _reason
    _reason = None


class DiskWatch:
    """Polls the free space under ``paths`` while the sweep runs; ``full`` is the one line."""

    def __init__(self, paths: list[Path], *, poll: float = POLL_SECONDS):
        self.paths, self.poll = [p for p in paths if p is not None], poll
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="raysparse-disk-watch", daemon=True)

    @property
    def full(self) -> str | None:
        return _reason

    def __enter__(self) -> DiskWatch:
        clear()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _watch(self) -> None:
        while _reason is None and not self._stopped.wait(self.poll):
            for path in self.paths:
                free = _free(path)
                if free is not None and free < FULL_BYTES:
                    report_full(path)
                    break


def keep_reserve(store: Path) -> None:
    """The reserve beside the embedded store, made when there is room (a sweep after one that
    used it makes it again)."""
    reserve = store / RESERVE_FILE
    free = _free(store)
    if reserve.exists() or free is None or free < 4 * RESERVE_BYTES:
        return
    try:
        with open(reserve, "wb") as file:
            file.write(b"\0" * RESERVE_BYTES)
    except OSError:
        reserve.unlink(missing_ok=True)


def release_reserve(store: Path) -> bool:
    reserve = store / RESERVE_FILE
    if not reserve.exists():
        return False
    reserve.unlink()
    return True


def check_not_full(path: Path, field: str) -> None:
    """Before start: a disk already full is one line, not a sweep that starts and stops."""
    free = _free(path)
    if free is not None and free < FULL_BYTES:
        raise ConfigError(field, f"{full_line(path, free)}; free some space first")


def _free(path: Path) -> int | None:
    existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None)
    try:
        return None if existing is None else shutil.disk_usage(existing).free
    except OSError:
        return None


def _size(count: int | None) -> str:
    if count is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
