"""Say what the driver waits for: a data factory that hangs, a dataset read from a slow disk.

    with still_waiting("building data (data.factory 'pkg.data:load')"):
        splits = build_splits(...)

prints ``raysparse: still building data (data.factory 'pkg.data:load'): 10 s`` after 10 seconds
and again every ``every`` seconds until the block ends, on stderr, so a user never stares at a
silent terminal; a block that ends sooner prints nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# seconds before the first line (RAYSPARSE_STILL_WAITING_S sets it), then between lines
FIRST_SAY_S = float(os.environ.get("RAYSPARSE_STILL_WAITING_S", "10"))
EVERY_S = 30.0


@contextmanager
def still_waiting(what: str, *, after: float | None = None, every: float = EVERY_S, stream=None) -> Iterator[None]:
    after = FIRST_SAY_S if after is None else after
    done = threading.Event()
    started = time.monotonic()
    out = stream if stream is not None else sys.stderr

    def say() -> None:
        wait = after
        while not done.wait(wait):
            print(f"raysparse: still {what}: {time.monotonic() - started:.0f} s", file=out, flush=True)
            wait = every

    thread = threading.Thread(target=say, name="raysparse-still-waiting", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
