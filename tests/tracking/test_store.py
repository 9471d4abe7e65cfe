"""The embedded server's SQLite store, judged before a server is started on it."""

import os
import sqlite3

import pytest

from raysparse.errors import ConfigError
from raysparse.tracking.store import check_store, store_problem


def sqlite_store(path):
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, payload BLOB)")
        connection.executemany("INSERT INTO runs (payload) VALUES (?)", [(os.urandom(3000),) for _ in range(100)])
    connection.close()
    return path


def test_a_healthy_store_or_none_yet_passes(tmp_path):
    assert store_problem(tmp_path / "mlflow.db") is None
    assert store_problem(sqlite_store(tmp_path / "mlflow.db"), thorough=True) is None
    check_store(tmp_path)


def test_overwritten_truncated_and_damaged_stores_are_named(tmp_path):
    whole = sqlite_store(tmp_path / "whole.db").read_bytes()
    cases = {"garbage.db": os.urandom(len(whole)), "empty.db": b"", "torn.db": whole[: len(whole) // 2],
             "damaged.db": whole[:4096] + os.urandom(len(whole) - 4096)}  # the header intact, the pages not
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    assert store_problem(tmp_path / "garbage.db") == "is not an SQLite database"
    assert store_problem(tmp_path / "empty.db") == "is not an SQLite database"
    assert store_problem(tmp_path / "torn.db") == f"is truncated ({len(whole) // 2:,} of {len(whole):,} bytes)"
    assert store_problem(tmp_path / "damaged.db", thorough=True).startswith("is damaged (")


def test_the_error_names_the_store_what_to_do_and_the_log(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all")
    with pytest.raises(ConfigError) as caught:
        check_store(tmp_path, log=tmp_path / "server.log")
    assert str(caught.value) == (f"the MLflow store {str(tmp_path / 'mlflow.db')!r} is not an SQLite database; move "
                                 "it aside (raysparse then starts an empty store) or restore it from a backup; the "
                                 f"server's log: {tmp_path / 'server.log'}")
