"""One driver per sweep name, through the CLI as a user runs it: a second start of a running sweep,
or a `--resume` of it, is refused with one line and touches nothing (two drivers gave two parent
runs and deleted each other's finished runs); a lock left by a driver that is gone is taken over."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

import raysparse
from raysparse.search.driver_lock import LOCK_FILE
from raysparse.tracking import ensure_local_server
from tests.search.conftest import tiny_sweep
from tests.search.test_driver_signals import start_cli
from tests.search.test_faults import wait_for


def two_trials(folder, name, epochs):
    raw = tiny_sweep(name, sampler="grid", max_concurrent=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.7, 0.8]}}
    raw["base"]["epochs"] = epochs
    del raw["num_samples"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def every_run(uri, name):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)


def test_a_running_sweep_refuses_a_second_driver_and_a_resume_and_ends_whole(home, tmp_path):
    name = "onedriver"
    uri = ensure_local_server(home)  # the one the sweeps will use
    path = two_trials(tmp_path, name, epochs=100)  # ~45 s from its lock to its end here: running while refused
    first, seconds = start_cli(home, path), []
    try:  # refused from the moment it holds the lock, before it starts Ray or writes anything
        wait_for((home / "ray_results" / name / LOCK_FILE).exists, timeout=240, what="the first driver's lock")
        seconds += [start_cli(home, path), start_cli(home, "--resume", name)]
        refused = [driver.communicate(timeout=180) for driver in seconds]
        assert first.poll() is None, "the first driver ended before the others were refused: make its sweep longer"
        _, first_err = first.communicate(timeout=600)
    finally:
        for driver in (first, *seconds):
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    assert first.returncode == 0, first_err[-3000:]

    line = (rf"raysparse: error: sweep '{name}' is running: driver pid {first.pid} on host "
            rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \(one driver per sweep: wait "
            rf"for it to end or stop it; then raysparse sweep --resume {name}\)")
    for driver, (_, err) in zip(seconds, refused):
        assert driver.returncode == 2, err[-3000:]
        assert re.fullmatch(line, err.strip()), err[-3000:]  # the one line: no Ray start, no traceback
    assert refused[0][0] == ""  # the second start prints nothing else
    assert refused[1][0] == ""  # nor does a refused resume (no "resuming sweep" before its error)

    runs = every_run(uri, name)
    assert sum(r.data.tags["raysparse.role"] == "sweep" for r in runs) == 1  # one parent run
    trials = [r for r in runs if r.data.tags["raysparse.role"] == "trial"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.info.lifecycle_stage for r in runs} == {"active"}  # none deleted
    assert not (home / "ray_results" / name / LOCK_FILE).exists()


def test_a_lock_left_by_a_driver_that_is_gone_is_taken_over(ray_runtime, home, capsys):
    name = "takenover"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = home / "ray_results" / name
    folder.mkdir(parents=True)
    (folder / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout),
                                                "process_started": 1.8e9, "since": 1.8e9}))
    raw = tiny_sweep(name, sampler="grid", max_concurrent=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    raw["base"]["epochs"] = 2
    del raw["num_samples"]
    result = raysparse.sweep(raw, home=home, verbose=False)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.8e9))
    assert list(result.to_dataframe()["status"]) == ["FINISHED"]
    took_over = [line for line in capsys.readouterr().err.splitlines() if "took over" in line]
    assert took_over == [f"raysparse: sweep '{name}': took over the lock of driver pid {int(gone.stdout)} on host "
                         f"{socket.gethostname()} since {since}, which no longer runs"]
    assert not (folder / LOCK_FILE).exists()
