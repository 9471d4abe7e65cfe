"""The one-driver-per-sweep lock (search/driver_lock.py) on real processes: a live holder refuses
the sweep, a dead one (its pid gone, or reused by another process) is taken over with one line,
a holder on another host is refused with the file to remove, and the lock goes when its driver ends."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

import raysparse.search.driver_lock as driver_lock_module
from raysparse.search.driver_lock import LOCK_FILE, SweepRunning, check_not_running, driver_lock

REFUSED = r"^sweep 'demo' is running: driver pid {pid} on host {host} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \((.+)\)$"


def write_lock(folder, *, pid, process_started, host=None, since=None):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "process_started": process_started,
              "since": since if since is not None else time.time()}
    (folder / LOCK_FILE).write_text(json.dumps(holder))
    return holder


def lock_of(folder):
    return json.loads((folder / LOCK_FILE).read_text())


@pytest.fixture
def sleeper():
    """A live process of this host that is not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def dead_pid():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(done.stdout)
    assert not psutil.pid_exists(pid)
    return pid


def test_the_lock_names_its_holder_while_held_and_goes_when_released(tmp_path):
    folder = tmp_path / "storage" / "demo"  # created with it: a new sweep's directory does not exist yet
    with driver_lock(folder, "demo"):
        held = lock_of(folder)
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        assert held["process_started"] == psutil.Process().create_time()
        assert abs(held["since"] - time.time()) < 60
    assert not (folder / LOCK_FILE).exists()


def test_the_lock_goes_when_the_driver_fails_or_is_stopped(tmp_path):
    for stop in (RuntimeError("a trial failed on the driver"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(stop)), driver_lock(tmp_path, "demo"):
            assert (tmp_path / LOCK_FILE).exists()
            raise stop
        assert not (tmp_path / LOCK_FILE).exists()


def test_a_live_driver_of_this_host_refuses_a_second_one_and_keeps_its_lock(tmp_path, sleeper):
    holder = write_lock(tmp_path, pid=sleeper.pid, process_started=psutil.Process(sleeper.pid).create_time())
    for attempt in (lambda: check_not_running(tmp_path, "demo"), lambda: driver_lock(tmp_path, "demo").__enter__()):
        with pytest.raises(SweepRunning) as refused:
            attempt()
        match = re.match(REFUSED.format(pid=sleeper.pid, host=re.escape(socket.gethostname())), str(refused.value))
        assert match, str(refused.value)
        assert "raysparse sweep --resume demo" in match.group(1)
        assert lock_of(tmp_path) == holder  # untouched


def test_a_second_driver_in_the_same_process_is_refused(tmp_path):
    with driver_lock(tmp_path, "demo"), pytest.raises(SweepRunning, match=f"driver pid {os.getpid()} "):
        with driver_lock(tmp_path, "demo"):
            pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_dead_holder_does_not_keep_the_lock(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid, process_started=time.time() - 100)
    check_not_running(tmp_path, "demo")  # a dead holder does not refuse; the check only reads
    assert lock_of(tmp_path)["pid"] == pid
    with driver_lock(tmp_path, "demo"):
        assert lock_of(tmp_path)["pid"] == os.getpid()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(rf"raysparse: sweep 'demo': took over the lock of driver pid {pid} on host "
                        rf"{re.escape(socket.gethostname())} since .+, which no longer runs", lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left beside it either


def test_a_pid_that_now_runs_another_process_does_not_keep_the_lock(tmp_path, sleeper, capsys):
    started = psutil.Process(sleeper.pid).create_time()
    write_lock(tmp_path, pid=sleeper.pid, process_started=started - 3600)  # the holder started an hour earlier
    with driver_lock(tmp_path, "demo"):
        assert lock_of(tmp_path)["pid"] == os.getpid()
    assert f"took over the lock of driver pid {sleeper.pid} " in capsys.readouterr().err
    assert sleeper.poll() is None  # the process that reuses the pid is left alone


def test_a_holder_on_another_host_is_refused_with_the_file_to_remove(tmp_path):
    holder = write_lock(tmp_path, pid=os.getpid(), process_started=1.0, host="node-7.cluster")
    with pytest.raises(SweepRunning) as refused, driver_lock(tmp_path, "demo"):
        pass
    match = re.match(REFUSED.format(pid=os.getpid(), host=r"node-7\.cluster"), str(refused.value))
    assert match, str(refused.value)
    assert match.group(1) == (f"it cannot be checked from this host; if that driver is gone, remove "
                              f"{str(tmp_path / LOCK_FILE)!r} and start again")
    assert lock_of(tmp_path) == holder


@pytest.mark.parametrize("text", ["", "{\"host\": ", "[1, 2]", json.dumps({"host": "h", "pid": -1,
                                                                          "process_started": 1, "since": 1})])
def test_a_damaged_lock_is_taken_over_with_one_line(tmp_path, capsys, monkeypatch, text):
    monkeypatch.setattr(driver_lock_module, "_TORN_WAIT_S", 0.2)  # how long a lock may take to be written
    (tmp_path / LOCK_FILE).write_text(text)
    check_not_running(tmp_path, "demo")
    with driver_lock(tmp_path, "demo"):
        assert lock_of(tmp_path)["pid"] == os.getpid()
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"raysparse: sweep 'demo': took over a damaged lock ({str(tmp_path / LOCK_FILE)!r} is not what " \
                   "a driver writes)"


def test_a_lock_still_being_written_is_waited_for_not_taken_over(tmp_path, sleeper):
    (tmp_path / LOCK_FILE).write_text("")  # created (O_EXCL), its JSON not written yet
    holder = {"host": socket.gethostname(), "pid": sleeper.pid,
              "process_started": psutil.Process(sleeper.pid).create_time(), "since": time.time()}
    writer = threading.Timer(0.5, lambda: (tmp_path / LOCK_FILE).write_text(json.dumps(holder)))
    writer.start()
    with pytest.raises(SweepRunning, match=f"driver pid {sleeper.pid} "), driver_lock(tmp_path, "demo"):
        pass
    writer.join()
    assert lock_of(tmp_path) == holder


def test_of_drivers_starting_at_once_one_holds_the_lock(tmp_path):
    """Eight processes take the lock at the same moment: one gets it (O_EXCL), the others are refused."""
    folder, stop = tmp_path / "sweep", tmp_path / "stop"
    start_at = time.time() + 3
    script = (f"import sys, time; from pathlib import Path; from raysparse.search.driver_lock import driver_lock, "
              f"SweepRunning\ntime.sleep(max(0, {start_at} - time.time()))\n"
              f"try:\n    with driver_lock(Path({str(folder)!r}), 'demo'):\n"
              f"        deadline = time.monotonic() + 120\n"
              f"        while not Path({str(stop)!r}).exists() and time.monotonic() < deadline:\n"
              f"            time.sleep(0.05)\n"
              f"except SweepRunning:\n    sys.exit(2)\n")
    drivers = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(8)]
    deadline = time.monotonic() + 120
    while sum(d.poll() is not None for d in drivers) < 7:  # the holder waits for `stop`
        assert time.monotonic() < deadline, "the drivers never decided"
        time.sleep(0.1)
    stop.touch()
    codes = sorted(driver.wait(timeout=120) for driver in drivers)
    assert codes == [0] + [2] * 7
    assert not (folder / LOCK_FILE).exists()
