"""Where a trial's wall time goes, for benchmarks/orchestration.py: with RAYSPARSE_TRIAL_TIMES set
to a file (on a node every trial can write to), each trial appends one JSON line when it ends.

``training_seconds`` is what the loop itself spent (building the data and model, the epochs, the
final evaluation): time in the report callback (logging, Tune) is not training, it is what the
sweep adds to a plain process. Clock times are ``time.time()``: comparable across processes.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

TIMES_ENV = "RAYSPARSE_TRIAL_TIMES"


class TrialTimes:
    def __init__(self, trial_id: str):
        self.trial_id, self.started = trial_id, time.time()
        self.first_step: float | None = None
        self.in_loop = self.in_report = 0.0

    def timed_loop(self, run: Callable[[], None]) -> None:
        began = time.perf_counter()
        try:
            run()
        finally:
            self.in_loop += time.perf_counter() - began

    def timed_report(self, report: Callable) -> Callable:
        """``report`` that counts its own time; its first call dates the first training step."""

        def timed(metrics: dict, *args, **kwargs):
            began = time.perf_counter()
            if self.first_step is None:  # the first epoch began epoch_seconds ago (its evaluation: ms)
                self.first_step = time.time() - float(metrics.get("epoch_seconds", 0.0))
            try:
                return report(metrics, *args, **kwargs)
            finally:
                self.in_report += time.perf_counter() - began

        return timed

    def write(self, threads: int) -> None:
        path = os.environ.get(TIMES_ENV)
        if not path:
            return
        row = {"trial_id": self.trial_id, "started": self.started, "ended": time.time(),
               "first_step": self.first_step, "training_seconds": self.in_loop - self.in_report,
               "pid": os.getpid(), "threads": threads}
        with open(path, "a") as out:  # one short line per write: appends from two processes do not interleave
            out.write(json.dumps(row) + "\n")


def read_times(path: str | os.PathLike) -> list[dict]:
    """The rows the trials wrote to ``path`` (one JSON line each)."""
    with open(path) as rows:
        return [json.loads(line) for line in rows if line.strip()]


def breakdown(seconds: float, wall_started: float, trials: list[dict], concurrency: int) -> dict:
    """Where a sweep's ``seconds`` went (it began at clock time ``wall_started``), from its trials'
    rows: start-up until the first training step, seconds per trial beyond its own training in
    the trial's process and over the sweep ((wall - start-up) x concurrency / trials - mean training)."""
    startup = min(t["first_step"] for t in trials) - wall_started
    training = [t["training_seconds"] for t in trials]
    return {
        "startup": startup,
        "in_process": statistics.mean(t["ended"] - t["started"] - t["training_seconds"] for t in trials),
        "over_sweep": (seconds - startup) * concurrency / len(trials) - statistics.mean(training),
        "training": statistics.mean(training),
        "after_startup": seconds - startup,
        "threads": sorted({t["threads"] for t in trials}),
    }
