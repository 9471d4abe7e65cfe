"""A disk that fills mid-sweep (a real tmpfs holding the home: MLflow's store and the sweep's
storage) stops the sweep in one line naming the path and its free space, with no traceback and
a failing exit status; once space is freed, ``--resume`` continues it, and every trial that had
FINISHED is still there."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from raysparse.tracking import ensure_local_server, stop_local_server
from tests.search.conftest import tiny_sweep
from tests.search.test_driver_signals import CRASH_TEXT, start_cli
from tests.search.test_faults import child_runs, wait_for


def fill(disk):
    """Writes until the filesystem says it is full, as a runaway log or download would."""
    with open(disk / "filler", "wb") as file:
        try:
            while True:
                file.write(b"\0" * (1 << 20))
                file.flush()
        except OSError as err:
            assert err.errno == 28, err  # ENOSPC


def all_runs(uri, name):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`raysparse.role` = 'trial'",
                              run_view_type=ViewType.ALL)


def test_a_disk_filled_mid_sweep_stops_it_in_one_line_and_a_resume_continues_it(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    home = disk / "home"
    raw = tiny_sweep("full", num_samples=4, max_concurrent=1)
    raw["base"]["epochs"] = 8  # a trial trains for some seconds: the disk fills under the second one
    sweep_file = tmp_path / "full.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    try:
        uri = ensure_local_server(home)  # the one the sweep uses, its store on the small disk
        driver = start_cli(home, sweep_file)
        try:
            wait_for(lambda: any(r.info.status == "FINISHED" for r in child_runs(uri, "full")), timeout=240,
                     what="a finished trial")
            finished = {r.info.run_id for r in child_runs(uri, "full") if r.info.status == "FINISHED"}
            fill(disk)
            filled = time.monotonic()
            out, err = driver.communicate(timeout=180)
            stopped_after = time.monotonic() - filled
            print(f"the driver exited {stopped_after:.1f} s after the disk filled")
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
        assert driver.returncode == 1, err[-3000:]
        said = [line for line in err.splitlines() if "is full" in line]
        assert len(said) == 1, err[-3000:]
        assert said[0].startswith(f"raysparse: sweep 'full' stopped: the disk holding '{disk}/home")
        assert " free); free space, then continue it with: raysparse sweep --resume full" in said[0]
        assert not [text for text in CRASH_TEXT if text in err], err[-3000:]
        assert stopped_after < 120, stopped_after  # seconds, not the minutes of retries it took before
        runs = all_runs(uri, "full")
        assert not [r for r in runs if r.info.status == "RUNNING"]  # closed, with the reason
        assert any(r.info.status == "KILLED" and "is full" in r.data.tags.get("raysparse.failure_reason", "")
                   for r in runs)

        (disk / "filler").unlink()
        resumed = subprocess.run([sys.executable, "-m", "raysparse.cli", "sweep", "--resume", "full"],
                                 env={**os.environ, "RAYSPARSE_HOME": str(home)}, capture_output=True, text=True,
                                 timeout=400)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        runs = all_runs(uri, "full")
        kept = {r.info.run_id: (r.info.lifecycle_stage, r.info.status) for r in runs if r.info.run_id in finished}
        assert kept == {run_id: ("active", "FINISHED") for run_id in finished}  # nothing trained is lost
        active = [r for r in runs if r.info.lifecycle_stage == "active"]
        assert len(active) >= 4 and not [r for r in active if r.info.status == "RUNNING"]  # every trial ran
        done = {r.info.run_id for r in active if r.info.status == "FINISHED"}
        # the resume trained what was left (a trial that completed in the instant the disk filled
        # may end KILLED, its final upload lost: Tune counts it done)
        assert len(done - finished) >= 2, ([(r.info.status, r.data.tags.get("raysparse.failure_reason"))
                                            for r in runs], resumed.stderr[-3000:])
    finally:
        stop_local_server(home)
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_sweep_on_a_disk_already_full_is_one_line_before_anything_starts(tmp_path):
    from raysparse.errors import ConfigError
    from raysparse.search import run_sweep

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        fill(disk)
        home = tmp_path / "home"
        with pytest.raises(ConfigError) as caught:
            run_sweep(tiny_sweep("onfull", storage_path=str(disk / "results")), home=home, verbose=False)
        assert caught.value.field == "storage_path"
        assert caught.value.message.startswith(f"the disk holding '{disk}/results' is full (")
        assert caught.value.message.endswith(" free); free some space first")
        assert not (home / "mlflow").exists()  # nothing started
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
