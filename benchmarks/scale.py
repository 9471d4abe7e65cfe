"""A thousand trials: one sweep of many short trials (one epoch of a small MLP on digits, every
artifact logged as usual: epochs, mask lineage, final masks, model, plots) through the CLI, as a
user runs it, on the embedded MLflow server (SQLite) and a local Ray, 2 trials at a time.

Run: .venv/bin/python benchmarks/scale.py [--trials 1000 --epochs 1 --out scale.json]
Prints and writes (JSON):
- wall time of ``raysparse sweep`` (start-up, the trials, the report it writes at the end);
- seconds per trial beyond its training: (wall - start-up) x concurrency / trials - mean training,
  from the times each trial writes (RAYSPARSE_TRIAL_TIMES, as benchmarks/orchestration.py);
- the driver's peak memory (RSS of the ``raysparse sweep`` process, sampled every 0.2 s);
- the time of ``raysparse report`` and ``raysparse potential`` on the finished sweep;
- the MLflow store's size (the server's home: SQLite file and artifacts).
And checks: exactly N child runs, all FINISHED, every epoch's metrics in each, no "database is
locked" in the server's log or the driver's output.
Anchor: Ray Tune's bookkeeping release test runs 10,000 one-second trials on 16 CPUs in 715 s
against 625 s of work (~0.14 s per trial beyond it, x16 CPUs / 10,000 trials: 90 s over 625 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml

from raysparse.search.trial_times import TIMES_ENV, breakdown, read_times

CONCURRENCY = 2
NAME = "bench-scale"
EPOCH_METRICS = ("epoch", "train_loss", "val_accuracy", "density")
LOCKED = "database is locked"
ANCHOR = "Ray Tune bookkeeping release test: 10,000 one-second trials on 16 CPUs in 715 s against 625 s of work"


def sweep_dict(trials: int, epochs: int) -> dict:
    """A dense reference among sparse methods (prune potential has one to compare with), two
    objectives (the report has a Pareto front)."""
    base = {
        "seed": 0, "epochs": epochs,
        "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "sparsity": {"method": "gmp", "final_sparsity": 0.8, "prune_start": 0, "prune_end": epochs,
                     "update_frequency": 5},
    }
    return {
        "name": NAME, "base": base, "num_samples": trials, "max_concurrent": CONCURRENCY,
        "space": {
            "sparsity.method": {"choice": ["dense", "gmp", "granet", "rigl"]},
            "sparsity.final_sparsity": {"uniform": [0.5, 0.95], "when": {"sparsity.method": ["gmp", "granet", "rigl"]}},
            "optimizer.lr": {"loguniform": [0.02, 0.3]},
        },
        "objectives": {"val_accuracy": "max", "density": "min"},
        "early_stopping": False,  # every trial trains its epochs: N finished runs to count
    }


class PeakRss:
    """The largest RSS of process ``pid`` seen, sampled in a thread until ``stop``."""

    def __init__(self, pid: int, every: float = 0.2):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(psutil.Process(pid), every), daemon=True)
        self._thread.start()

    def _sample(self, process: psutil.Process, every: float) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, process.memory_info().rss)
            except psutil.Error:  # it ended
                return
            self._stop.wait(every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def raysparse(*args: str, env: dict, log: Path) -> tuple[float, str]:
    """Seconds of one ``raysparse`` command and its output (also appended to ``log``)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from raysparse.cli import main; main()", *args], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with log.open("a") as out:
        out.write(f"$ raysparse {' '.join(args)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise SystemExit(f"raysparse {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def run_sweep_cli(sweep_file: Path, env: dict, log: Path) -> tuple[float, float, int, str]:
    """Wall seconds of ``raysparse sweep``, its clock start, the driver's peak RSS, its output."""
    wall_started, started = time.time(), time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from raysparse.cli import main; main()", "sweep",
                                 str(sweep_file)], env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = PeakRss(proc.pid)
        code = proc.wait()
    seconds = time.perf_counter() - started
    rss = peak.stop()
    output = log.read_text()
    if code != 0:
        raise SystemExit(f"raysparse sweep exited {code}:\n{output[-3000:]}")
    return seconds, wall_started, rss, output


def check_runs(uri: str, trials: int, epochs: int) -> dict:
    """Exactly ``trials`` child runs, all FINISHED, each with every epoch of its metrics."""
    from mlflow import MlflowClient

    from raysparse.tracking import load_sweep

    data = load_sweep(uri, NAME, NAME)
    runs = data.trials
    client = MlflowClient(uri)

    def missing_epochs(run_id: str) -> list[str]:
        want = set(range(1, epochs + 1))
        return [key for key in EPOCH_METRICS if {m.step for m in client.get_metric_history(run_id, key)} != want]

    with ThreadPoolExecutor(max_workers=4) as pool:  # a check, not a report path: one request per metric
        missing = dict(zip(runs["run_id"], pool.map(missing_epochs, runs["run_id"]), strict=True))
    incomplete = {run_id: keys for run_id, keys in missing.items() if keys}
    return {
        "child_runs": len(runs), "finished": int((runs["status"] == "FINISHED").sum()),
        "statuses": runs["status"].value_counts().to_dict(), "runs_missing_epochs": len(incomplete),
        "example_missing": dict(list(incomplete.items())[:3]),
    }


def store_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default="scale.json", help="the figures as JSON")
    parser.add_argument("--home", help="raysparse home to use (default: a new temporary one, removed after)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="raysparse-scale-"))
    home.mkdir(parents=True, exist_ok=True)
    times, log = home / "trial_times.jsonl", home / "driver.log"
    times.write_text("")
    sweep_file = home / "scale.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep_dict(args.trials, args.epochs), sort_keys=False))
    env = {**os.environ, "RAYSPARSE_HOME": str(home), TIMES_ENV: str(times)}
    from raysparse.tracking import ensure_local_server, stop_local_server

    try:
        print(f"{args.trials} trials x {args.epochs} epoch(s), {CONCURRENCY} at a time, home {home}", flush=True)
        seconds, wall_started, rss, output = run_sweep_cli(sweep_file, env, log)
        parts = breakdown(seconds, wall_started, read_times(times), CONCURRENCY)
        report_s, _ = raysparse("report", NAME, env=env, log=home / "commands.log")
        potential_s, _ = raysparse("potential", NAME, env=env, log=home / "commands.log")
        uri = ensure_local_server(home)
        checks = check_runs(uri, args.trials, args.epochs)
        server_log = (home / "mlflow" / "server.log").read_text(errors="replace")
        checks["database_locked"] = server_log.count(LOCKED) + output.count(LOCKED)
        checks["trial_times_rows"] = len(read_times(times))
        figures = {
            "trials": args.trials, "epochs": args.epochs, "concurrency": CONCURRENCY, "cpus": os.cpu_count(),
            "wall_s": seconds, "startup_s": parts["startup"], "training_per_trial_s": parts["training"],
            "beyond_training_per_trial_s": parts["over_sweep"], "in_trial_process_per_trial_s": parts["in_process"],
            "driver_peak_rss_mb": rss / 2**20, "report_s": report_s, "potential_s": potential_s,
            "store_mb": store_bytes(home / "mlflow") / 2**20, "checks": checks,
            "progress_line": next((line for line in reversed(output.splitlines()) if line.startswith("[")), ""),
            "load_average": os.getloadavg()[0],
        }
    finally:
        stop_local_server(home)
    Path(args.out).write_text(json.dumps(figures, indent=2, default=str))
    ok = (checks["child_runs"] == args.trials and checks["finished"] == args.trials
          and checks["runs_missing_epochs"] == 0 and checks["database_locked"] == 0)
    print(f"| {args.trials} trials x {args.epochs} epoch | wall {seconds:.0f} s (start-up {parts['startup']:.1f} s) "
          f"| beyond training {parts['over_sweep']:.2f} s/trial (training {parts['training']:.2f} s) "
          f"| driver peak {rss / 2**20:.0f} MB | report {report_s:.1f} s | potential {potential_s:.1f} s "
          f"| store {figures['store_mb']:.0f} MB |")
    print(f"anchor: {ANCHOR} (~0.14 s per trial beyond its work)")
    print(f"checks: {checks['child_runs']} child runs, {checks['finished']} FINISHED, "
          f"{checks['runs_missing_epochs']} missing epochs, {checks['database_locked']} '{LOCKED}' -> "
          f"{'OK' if ok else 'FAILED'}; figures in {args.out}")
    if not args.home:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
