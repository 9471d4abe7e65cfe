"""A DDP trial whose workers cannot be placed fails within the bound (Ray Train's
RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S), with Ray's reason in its run and on the console, once."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raysparse.errors import ConfigError
from raysparse.search.worker_group import START_TIMEOUT_ENV, placement_state, start_timeout_s
from raysparse.tracking import load_sweep
from tests.search.conftest import tiny_sweep

BOUND_S = 8
# a driver whose local Ray (2 CPUs) has 1.5 of them held by another job's placement group, taken
# before the sweep starts: the trial's own process (0.01 CPU) starts, its 2 x 0.5 CPU workers cannot
DRIVER = """
import sys

import ray
from ray.util.placement_group import placement_group

from raysparse.cli import main
from raysparse.search.local_ray import start_local_ray

start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.get(placement_group([{"CPU": 1.5}]).ready(), timeout=60)
sys.exit(main(["sweep", sys.argv[1]]))
"""


def test_the_bound_is_ray_trains_own_setting(monkeypatch):
    from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR

    assert START_TIMEOUT_ENV == WORKER_GROUP_START_TIMEOUT_S_ENV_VAR  # a Ray that renames it breaks the bound
    monkeypatch.setenv(START_TIMEOUT_ENV, "0")
    with pytest.raises(ConfigError, match=r"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S: got '0'; allowed: a number"):
        start_timeout_s()
    monkeypatch.delenv(START_TIMEOUT_ENV)
    assert start_timeout_s() == 300.0 and os.environ[START_TIMEOUT_ENV] == "300"  # handed on to Ray's controller


def test_rays_verdict_on_a_worker_group_is_asked_for_and_given_back(ray_runtime):
    free = ray_runtime.available_resources()["CPU"]
    assert placement_state([{"CPU": 0.5}] * 2, "PACK") == "FINISHED"  # fits the runtime's 2 CPUs
    assert placement_state([{"CPU": 3}] * 2, "PACK") == "INFEASIBLE"  # no node holds one of them
    assert placement_state([{"CPU": 1}, {"GPU": 1}], "PACK") == "INFEASIBLE"  # no GPU here
    # each fits a node, together more than the runtime has: Ray says no resources (an autoscaler may add some)
    assert placement_state([{"CPU": 0.5}] * 8, "PACK") == "NO_RESOURCES"
    deadline = time.monotonic() + 10  # Ray removes a placement group a moment after it is asked to
    while ray_runtime.available_resources().get("CPU") != free:  # the probes hold nothing once asked
        assert time.monotonic() < deadline, ray_runtime.available_resources()
        time.sleep(0.05)


def test_workers_that_cannot_be_placed_fail_the_trial_within_the_bound_once(home, tracking_uri, tmp_path):
    raw = tiny_sweep("unplaced", sampler="grid", max_concurrent=1, max_failures=2,
                     resources={"workers": 2, "cpus_per_worker": 0.5})
    raw["space"] = {"sparsity.final_sparsity": {"choice": [0.8]}}
    del raw["num_samples"]
    path = tmp_path / "unplaced.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAYSPARSE_HOME": str(home), START_TIMEOUT_ENV: str(BOUND_S)}
    # with Ray Train's own default this waits forever: the timeout fails the test instead
    done = subprocess.run([sys.executable, "-c", DRIVER, str(path)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]  # every trial failed

    data = load_sweep(tracking_uri, "unplaced")
    (trial,) = data.trials.itertuples()
    assert trial.status == "FAILED"
    reason = trial.failure_reason
    assert reason.startswith("workers not placed: the trial's 2 DDP workers x {CPU: 0.5} were not placed within "
                             f"{BOUND_S} s (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"), reason
    assert "Ray's placement state is NO_RESOURCES: the cluster has them, but others hold them" in reason
    assert re.search(r"\(CPU 1 asked, 0\.4\d free of 2\)", reason), reason  # 1.5 held, 0.01 by the trial
    waited = float(re.search(r"Ray Train gave up after ([\d.]+) s", reason).group(1))
    assert BOUND_S <= waited < BOUND_S + 40, reason  # the bound ended it (its controller takes seconds to start)
    # on the console: the progress line counts it, and the driver's last lines say why
    assert "0 finished, 0 stopped early, 1 failed" in done.stdout
    assert f"failed trial {trial.trial_id}: workers not placed: the trial's 2 DDP workers" in done.stderr
    # Tune retried it (max_failures 2): the retry read the recorded reason and failed at once, placing nothing
    failures = _failures(home, trial.trial_id)
    assert len(failures) == 2 and "Ray Train gave up" in failures[0], failures
    assert failures[1].rstrip().endswith("(not retried: it would wait as long again)"), failures[1]


def _failures(home, trial_id):
    """What Tune recorded of each failed attempt of the trial (in its error.txt, each after "Failure # N")."""
    (error_file,) = Path(home, "ray_results", "unplaced").glob(f"*{trial_id}*/error.txt")
    return re.split(r"^Failure # \d+ .*$", error_file.read_text(), flags=re.MULTILINE)[1:]
