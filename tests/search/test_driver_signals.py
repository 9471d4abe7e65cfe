"""A `raysparse sweep` driver stopped mid-training by SIGTERM (`kill`, `raysparse job stop`) or
Ctrl-C closes its runs as KILLED, says how to continue, and exits as a shell reports the signal
(143, 130): no abort, no C++ stack (Ray's abseil handler turned SIGTERM into exit 134 with one)."""

import os
import signal
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from raysparse.search.driver_lock import LOCK_FILE
from raysparse.tracking import ensure_local_server
from tests.search.conftest import tiny_sweep
from tests.search.test_faults import child_runs, wait_for

CRASH_TEXT = ("Aborted", "terminate called", "core dumped", "*** SIGTERM", "*** SIGABRT", "PC: @", "logging.cc",
              "Traceback", "Fatal Python error")


def long_sweep(folder, name):
    """One trial that would train for minutes: it is stopped mid-way."""
    raw = tiny_sweep(name, sampler="grid", max_concurrent=1)
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    raw["base"]["epochs"] = 2000
    del raw["num_samples"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_cli(home, *args):
    return subprocess.Popen([sys.executable, "-m", "raysparse.cli", "sweep", *map(str, args)],
                            env={**os.environ, "RAYSPARSE_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def training(uri, name):
    return lambda: any(r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) >= 1
                       for r in child_runs(uri, name))


@pytest.mark.parametrize(("stop", "status"), [
    (lambda driver: driver.send_signal(signal.SIGTERM), 143),  # kill PID, as `raysparse job stop` does
    # Ctrl-C: to the driver alone (a terminal's goes to the group, and Ray's workers stop too);
    # tuner.fit() was seen returning normally after one (exit 0): it is remembered
    (lambda driver: driver.send_signal(signal.SIGINT), 130),
], ids=["sigterm", "ctrl-c"])
def test_a_stopped_driver_closes_its_runs_and_exits_with_the_signal_status(home, tmp_path, stop, status):
    name = f"stopped-{status}"
    uri = ensure_local_server(home)  # the one the sweep will use
    driver = start_cli(home, long_sweep(tmp_path, name))
    try:
        wait_for(training(uri, name), timeout=240, what="a trial training")
        stop(driver)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == status, err[-3000:]
    assert f"raysparse: sweep {name!r} stopped, its open runs closed as KILLED; continue it with: " \
           f"raysparse sweep --resume {name}" in err.splitlines()
    assert not [text for text in CRASH_TEXT if text in err], err[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    roles = sorted(r.data.tags["raysparse.role"] for r in runs)
    assert roles == ["sweep", "trial"]
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"]
    assert not (home / "ray_results" / name / LOCK_FILE).exists()  # released on the way out
