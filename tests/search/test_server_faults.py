"""The tracking server dies mid-sweep (kill -9 of its process group): the embedded server is
restarted on its port and store and the sweep ends as if nothing happened; a server the sweep
was given (not ours to restart) stops the sweep with one line, and `--resume` continues it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from mlflow import MlflowClient

import raysparse
from raysparse.tracking import download_lineage, ensure_local_server, load_sweep, stop_local_server
from raysparse.tracking.server import answers
from tests.search.conftest import logged_steps, tiny_sweep
from tests.search.test_faults import child_runs, failures_recorded, wait_for


def two_trials(name, epochs):
    raw = tiny_sweep(name, sampler="grid", max_concurrent=2, max_failures=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.7, 0.8]}}
    raw["base"]["epochs"] = epochs  # long enough to kill the server mid-way: a second an epoch here
    raw["base"]["model"] = {"name": "mlp", "hidden": [256, 256]}
    raw["base"]["sparsity"].update(prune_end=epochs // 2, update_frequency=10)
    del raw["num_samples"]
    return raw


def kill_server(home):
    """kill -9 the embedded server's whole process group; returns its record (pid, port, host)."""
    record = json.loads((home / "mlflow" / "server.json").read_text())
    os.killpg(record["pid"], signal.SIGKILL)
    return record


def training(uri, experiment, epochs, left=8):
    """A trial has trained 3 epochs and has ``left`` more to go: the kill lands mid-training."""
    def a_trial_mid_way():
        return any(r.info.status == "RUNNING" and 3 <= r.data.metrics.get("epoch", 0) < epochs - left
                   for r in child_runs(uri, experiment))
    return a_trial_mid_way


@pytest.fixture
def homes(tmp_path):
    """Raysparse homes whose servers this test kills: not the one the other search tests share."""
    made = []

    def make(name):
        made.append(tmp_path / name)
        return made[-1]

    yield make
    for home in made:
        stop_local_server(home)


def test_embedded_server_killed_mid_sweep_is_restarted_and_nothing_is_lost(ray_runtime, homes):
    home = homes("home")
    epochs, results = 20, []
    uri = ensure_local_server(home)  # the one the sweep will use
    sweep = threading.Thread(target=lambda: results.append(
        raysparse.sweep(two_trials("serverkilled", epochs), home=home, verbose=False)), daemon=True)
    sweep.start()
    wait_for(training(uri, "serverkilled", epochs), what="a trial mid-way")
    killed = kill_server(home)
    killed_at = time.monotonic()
    wait_for(lambda: answers(uri), timeout=60, what="the server restarted on its port")
    sweep.join(timeout=180)
    assert not sweep.is_alive(), f"the sweep still runs {time.monotonic() - killed_at:.0f} s after the kill"
    (result,) = results
    assert result.errors == [] and failures_recorded(result) == 0  # the trials went on, none was retried

    restarted = json.loads((home / "mlflow" / "server.json").read_text())
    assert restarted["pid"] != killed["pid"] and restarted["port"] == killed["port"]
    data = load_sweep(uri, "serverkilled")
    assert data.parent_status == "FINISHED"
    assert sorted(data.trials["status"]) == ["FINISHED", "FINISHED"]
    for run_id in data.trials["run_id"]:  # every epoch, queued while the server was down too, once
        assert logged_steps(uri, run_id) == {key: list(range(1, epochs + 1)) for key in logged_steps(uri, run_id)}
        assert download_lineage(uri, run_id)  # the final artifacts were uploaded after the restart


def test_a_server_we_do_not_own_stops_the_sweep_with_one_line_and_resume_continues_it(ray_runtime, homes, tmp_path):
    # a server of the user's, whose URI (with credentials, which no line may show) the sweep is given
    theirs, home = homes("their_server"), homes("home")
    plain = ensure_local_server(theirs)
    uri = plain.replace("http://", "http://alice:hunter2@")
    # trained twice: up to the kill, then all again on --resume (no checkpoint); 24 epochs of a few
    # tenths of a second leave a window of several seconds mid-way for the kill
    epochs, name = 24, "notours"
    raw = two_trials(name, epochs)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    raw["tracking_uri"] = uri
    path = tmp_path / "notours.yaml"
    path.write_text(yaml.safe_dump(raw))
    # each epoch to MLflow as it ends: the kill must land in a window of a few epochs, seen there
    env = {**os.environ, "RAYSPARSE_HOME": str(home), "RAYSPARSE_LOG_EVERY_S": "0"}
    driver = subprocess.Popen([sys.executable, "-m", "raysparse.cli", "sweep", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(training(plain, name, epochs, left=12), what="the trial mid-way")
        killed = kill_server(theirs)
        killed_at = time.monotonic()
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert time.monotonic() - killed_at < 60  # noticed within seconds, not after minutes of retries
    last = stderr.strip().splitlines()[-1]
    assert driver.returncode == 1, stderr[-3000:]
    # the URI's credentials went to MLflow's environment variables: the line names the server without them
    assert f"{plain}" in last and f"raysparse sweep --resume {name}" in last, last
    assert "hunter2" not in stderr and "alice" not in stderr

    ensure_local_server(theirs, port=killed["port"])  # the user brings their server back
    raysparse.resume_sweep(name, home=home, verbose=False)  # as `raysparse sweep --resume`, on this test's Ray
    data = load_sweep(plain, name)
    assert data.parent_status == "FINISHED" and list(data.trials["status"]) == ["FINISHED"]
    run_id = data.trials["run_id"].iloc[0]
    assert logged_steps(plain, run_id) == {key: list(range(1, epochs + 1)) for key in logged_steps(plain, run_id)}
    assert MlflowClient(plain).get_run(run_id).info.status == "FINISHED"
