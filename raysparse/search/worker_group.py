"""A DDP trial whose workers cannot be placed fails within a bound, saying what it asked for and
why Ray could not place it.

Ray Train (V2, Ray's default since 2.51) reserves one placement group for a trial's workers and
waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S for it; then it gives up and, by default
(``FailureConfig.controller_failure_limit=-1``), tries again, forever, saying so only in its
controller's log: a trial whose workers never fit waited without end, the console silent. Here
Ray's wait is the bound, its first timeout ends the trial (``controller_failure_limit=0``), and
the trial's error says what Ray says of the request.
"""

from __future__ import annotations

import math
import os
import time

import ray

from raysparse.errors import ConfigError

# Ray Train's own setting (ray/train/v2/_internal/constants.py; its timeout error names it). Its
# controller reads it from the environment that fit() hands on, so it is set where Ray starts: a
# local sweep's Ray inherits the driver's; a cluster's nodes need it in `ray start`'s environment
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
# Ray's 60 s is short on a cluster, where the autoscaler may first have to start a node for the
# workers (a GPU node takes minutes). A local sweep only waits here when the CPUs are held by
# others (settings.check_local_resources refuses a trial the machine cannot hold; and
# settings.concurrent_trials starts no more DDP trials than fit). On a cluster, a trial that
# waits longer than this for the sweep's others fails too, and its error says to lower max_concurrent
DEFAULT_START_TIMEOUT_S = 300.0
# Ray's verdict on the request, asked again once its wait is over (its own placement group is gone)
VERDICT_WAIT_S = 3.0
# what Ray's states of a placement group say of the request (NO_RESOURCES also when the cluster
# has fewer in all than the workers need, if each one alone would fit a node: see _meaning)
_MEANING = {
    "NO_RESOURCES": "the cluster has them, but others hold them (the sweep's other trials, or other jobs)",
    "INFEASIBLE": "no node of the cluster can hold one worker, and no autoscaler can add one",
    "FINISHED": "they are free again now (released after the wait)",
}


class WorkerGroupNotPlaced(RuntimeError):
    """The trial's workers found no room within the bound. Not retried: a retry would wait as long
    for the same resources."""


def start_timeout_s() -> float:
    """The bound: Ray Train's setting, defaulted here (before fit(), which hands it to Ray's
    controller) where Ray's start did not set it."""
    raw = os.environ.setdefault(START_TIMEOUT_ENV, f"{DEFAULT_START_TIMEOUT_S:g}")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(START_TIMEOUT_ENV, f"got {raw!r}; allowed: a number of seconds > 0")
    return seconds


def not_placed(err: BaseException, *, workers: int, per_worker: dict[str, float], strategy: str,
               waited_s: float) -> WorkerGroupNotPlaced | None:
    """What ``TorchTrainer.fit`` raised, as a WorkerGroupNotPlaced that says why, when Ray Train
    could not place the workers (its wait timed out, or the cluster's largest size is too small);
    None for any other error."""
    from ray.train.v2._internal.exceptions import InsufficientClusterResourcesError, WorkerGroupStartupTimeoutError

    failure = getattr(err, "controller_failure", None)  # a ray.train.ControllerError's cause
    asked = f"the trial's {workers} DDP workers x {_amounts(per_worker)}"
    if isinstance(failure, InsufficientClusterResourcesError):  # at once: an autoscaler's cluster at its largest
        return WorkerGroupNotPlaced(f"{asked} cannot be placed; Ray Train: {' '.join(str(failure).split())}")
    if not isinstance(failure, WorkerGroupStartupTimeoutError):
        return None
    state = placement_state([per_worker] * workers, strategy)
    need = {name: amount * workers for name, amount in per_worker.items()}
    free, total = ray.available_resources(), ray.cluster_resources()
    counts = ", ".join(f"{name} {need[name]:g} asked, {free.get(name, 0.0):g} free of {total.get(name, 0.0):g}"
                       for name in need)
    return WorkerGroupNotPlaced(
        f"{asked} were not placed within {os.environ[START_TIMEOUT_ENV]} s ({START_TIMEOUT_ENV}; Ray Train gave "
        f"up after {waited_s:.1f} s). Ray's placement state is {state}{_meaning(state, need, total)} ({counts}). "
        f"Free them, lower max_concurrent or the resources a trial asks for, or raise {START_TIMEOUT_ENV} to wait "
        "longer"
    )


def _meaning(state: str, need: dict[str, float], total: dict[str, float]) -> str:
    if state == "NO_RESOURCES" and any(amount > total.get(name, 0.0) for name, amount in need.items()):
        return ": the cluster has fewer in all (until an autoscaler adds nodes)"
    return f": {_MEANING[state]}" if state in _MEANING else ""


def placement_state(bundles: list[dict[str, float]], strategy: str, wait_s: float = VERDICT_WAIT_S) -> str:
    """Ray's scheduling state of a placement group of ``bundles``, asked for now and given back:
    NO_RESOURCES, INFEASIBLE, FINISHED (placed), or where it still was after ``wait_s``."""
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    probe = placement_group(bundles, strategy=strategy)
    try:
        deadline = time.monotonic() + wait_s
        while True:  # QUEUED, then SCHEDULING_STARTED, until Ray has tried the nodes once
            state = placement_group_table(probe)["stats"]["scheduling_state"]
            if state in _MEANING or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)
    finally:
        remove_placement_group(probe)


def _amounts(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {amount:g}" for name, amount in resources.items()) + "}"

