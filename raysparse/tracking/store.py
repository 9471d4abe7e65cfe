"""The embedded server's SQLite store, checked before a server is started on it: a store that is
overwritten, truncated or damaged would make ``mlflow server`` exit with 30 lines of SQLAlchemy
traceback in its log; the user gets one line naming the file and what to do instead."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from raysparse.errors import ConfigError

STORE_FILE = "mlflow.db"
_MAGIC = b"SQLite format 3\x00"


def store_problem(db: Path, *, thorough: bool = False) -> str | None:
    """What is wrong with the SQLite file ``db`` (None: nothing seen, or no file yet). The quick
    checks read the header and the schema; ``thorough`` reads every page (after a failed start)."""
    try:
        with open(db, "rb") as handle:
            header = handle.read(100)
        size = db.stat().st_size
    except FileNotFoundError:
        return None
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "is not an SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the header's page count is valid while its change counter matches "version valid for"
    if header[24:28] == header[92:96] and size < pages * page_size:
        return f"is truncated ({size:,} of {pages * page_size:,} bytes)"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=10)) as connection:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if thorough:
                verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    return f"is damaged ({verdict[:120]})"
    except sqlite3.OperationalError:  # locked or unreadable: not proof of damage, the server will say
        return None
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        return f"is damaged ({err})"
    return None


def check_store(state_dir: Path, *, thorough: bool = False, log: Path | None = None) -> None:
    """One ConfigError line when the store in ``state_dir`` cannot be served."""
    db = Path(state_dir) / STORE_FILE
    problem = store_problem(db, thorough=thorough)
    if problem is None:
        return
    server_log = f"; the server's log: {log}" if log is not None else ""
    raise ConfigError("", f"the MLflow store {str(db)!r} {problem}; move it aside (raysparse then starts an empty "
                      f"store) or restore it from a backup{server_log}")
