"""Sweeps as Ray Jobs: submitted to a cluster's dashboard with their working directory, the
driver then runs on the cluster (`raysparse sweep FILE --address auto`), so closing the laptop
does not stop the sweep. The client authenticates with the cluster's Ray token (RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), which never enters the job's arguments or logs."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from raysparse.errors import ConfigError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# what a sweep never needs on the cluster: the working directory is uploaded on every submit
EXCLUDES = [".venv/", ".git/", "__pycache__/", "*.pyc", ".pytest_cache/", ".ruff_cache/"]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def client(address: str | None):
    """A Jobs API client for the dashboard at ``address``; connection and token problems are
    reported as one error naming ``--address``."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = address or DEFAULT_ADDRESS
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as err:
        raise ConfigError("--address", f"{address} needs the cluster's Ray token: set RAY_AUTH_TOKEN or "
                                       "RAY_AUTH_TOKEN_PATH, or copy it to ~/.ray/auth_token") from err
    except ConnectionError as err:
        raise ConfigError("--address", f"no Ray dashboard answers at {address} ({err}); "
                                       "forward it with `ray dashboard cluster.yaml`") from err


def sweep_entrypoint(sweep_file: Path, working_dir: Path, options: dict[str, str | int | None]) -> str:
    """The command the job runs on the cluster, relative to the uploaded working directory: the
    ``raysparse`` console script, whose own directory comes first on ``sys.path``, where ``python
    -m`` would put the working directory, ahead of the standard library (``python -P`` keeps it out
    only from Python 3.11; raysparse runs on 3.10). Ray's working_dir still names that directory
    first in the job's PYTHONPATH, which this does not change."""
    try:
        relative = sweep_file.resolve().relative_to(working_dir.resolve())
    except ValueError:
        raise ConfigError("--working-dir", f"{working_dir} does not contain the sweep file {sweep_file}; "
                                           "submit from the directory that holds it") from None
    args = ["raysparse", "sweep", relative.as_posix(), "--address", "auto"]
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


# a cluster just started answers on its dashboard before its job agent is up: Ray says so with this
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 60.0


def submit(address: str | None, entrypoint: str, working_dir: Path, *, name: str) -> str:
    jobs = client(address)
    runtime_env = {"working_dir": str(working_dir), "excludes": EXCLUDES}
    deadline, said = time.monotonic() + AGENT_WAIT_S, False
    while True:
        try:
            return jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   metadata={"raysparse.sweep": name})
        except RuntimeError as err:
            if NO_AGENT not in str(err) or time.monotonic() > deadline:
                raise
            if not said:
                print(f"raysparse: the cluster's job agent is not up yet; trying again for up to "
                      f"{AGENT_WAIT_S:.0f} s", file=sys.stderr, flush=True)
                said = True
            time.sleep(1.0)


def follow(address: str | None, job_id: str, *, poll: float = 1.0, out=sys.stdout) -> str:
    """Print the job's log as it grows until the job ends; returns its final status."""
    jobs, shown = client(address), 0
    while True:
        status = str(jobs.get_job_status(job_id).value)
        logs = jobs.get_job_logs(job_id)
        out.write(logs[shown:])
        out.flush()
        shown = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll)


def status(address: str | None, job_id: str) -> str:
    return str(client(address).get_job_status(job_id).value)


def logs(address: str | None, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop(address: str | None, job_id: str, *, timeout: float = 60.0) -> str:
    """Ask the job to stop (SIGTERM to its driver, then SIGKILL) and wait until it has."""
    jobs = client(address)
    jobs.stop_job(job_id)
    deadline = time.monotonic() + timeout
    while (state := str(jobs.get_job_status(job_id).value)) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    return state
