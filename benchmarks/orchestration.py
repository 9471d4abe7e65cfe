"""Orchestration cost: a 16-trial digits sweep through raysparse (local Ray, 2 trials at a time,
embedded MLflow server, every epoch logged and checkpointed) against the same 16 configs
trained one after another in one plain Python process (an in-process Optuna study, no Ray, no
MLflow). Rounds alternate the two so machine noise hits both.

Run: .venv/bin/python benchmarks/orchestration.py [--rounds 2 --trials 16 --epochs 30 --hidden 256 128]
Prints wall seconds per round and the ratio raysparse / plain (goal: <= 1.0 on 2 CPUs), then,
from the times each trial writes (RAYSPARSE_TRIAL_TIMES):
- start-up: run_sweep called -> the first trial's first training step (goal <= 6 s);
- seconds per trial beyond its own training, in the trial's process (its wall time minus the
  loop's) and over the sweep ((wall - start-up) x concurrency / trials - mean training; goal <= 0.3 s);
- sweep / plain with start-up excluded (goal <= 0.8): two 1-thread trials at a time against one
  process with torch's default threads (both counts printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch

from raysparse.search import load_sweep, run_sweep
from raysparse.search.trial_times import TIMES_ENV, breakdown, read_times
from raysparse.train import fit

CONCURRENCY = 2


def sweep_dict(trials: int, epochs: int, hidden: list[int] | None = None) -> dict:
    base = {
        "seed": 0, "epochs": epochs,
        "model": {"name": "mlp", "hidden": hidden or [256, 128]},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "sparsity": {"method": "granet", "final_sparsity": 0.9, "prune_end": epochs * 2 // 3, "update_frequency": 25},
    }
    return {
        "name": "bench-orchestration", "base": base, "num_samples": trials, "max_concurrent": CONCURRENCY,
        "space": {
            "sparsity.method": {"choice": ["gmp", "granet", "rigl"]},
            "sparsity.final_sparsity": {"uniform": [0.8, 0.98]},
            "optimizer.lr": {"loguniform": [0.01, 0.2]},
        },
        "objectives": {"val_accuracy": "max"},
        "early_stopping": False,  # the same work on both sides: every trial trains every epoch
    }


def plain_process(raw: dict) -> float:
    """The same sampler, the same number of trials, trained in this process one by one."""
    sweep = load_sweep(raw)
    started = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(sweep.num_samples):
        trial = study.ask()
        config = sweep.trial_config({key: domain.suggest(trial, key) for key, domain in sweep.space.items()})
        study.tell(trial, fit(config)["val_accuracy"])
    return time.perf_counter() - started


def through_raysparse(raw: dict, times: Path) -> tuple[float, dict]:
    """Wall seconds of run_sweep, and where they went (from the trials' times)."""
    times.write_text("")
    with tempfile.TemporaryDirectory() as home:
        started, wall_started = time.perf_counter(), time.time()  # includes Ray and the MLflow server start
        run_sweep(raw, home=home, verbose=False)
        seconds = time.perf_counter() - started
        from raysparse.tracking import stop_local_server

        stop_local_server(home)
    import ray

    ray.shutdown()
    return seconds, breakdown(seconds, wall_started, read_times(times), CONCURRENCY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="MLP widths (trial size)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = sweep_dict(args.trials, args.epochs, args.hidden)
    times = Path(tempfile.mkdtemp()) / "trial_times.jsonl"
    os.environ[TIMES_ENV] = str(times)  # before Ray starts: its workers inherit it
    plain, swept, parts = [], [], []
    for round_ in range(args.rounds):
        plain.append(plain_process(raw))
        seconds, part = through_raysparse(raw, times)
        swept.append(seconds)
        parts.append(part)
        print(f"round {round_ + 1}: plain {plain[-1]:.1f}s, raysparse {swept[-1]:.1f}s (start-up "
              f"{part['startup']:.1f}s; per trial beyond training: {part['in_process']:.2f}s in its process, "
              f"{part['over_sweep']:.2f}s over the sweep; training {part['training']:.2f}s a trial); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    p, s = statistics.median(plain), statistics.median(swept)

    def median(key: str) -> float:
        return statistics.median(part[key] for part in parts)

    print(f"| {args.trials} trials x {args.epochs} epochs, digits MLP {args.hidden} | plain process {p:.1f}s "
          f"| raysparse sweep {s:.1f}s | ratio {s / p:.2f} |")
    print(f"start-up (run_sweep -> first training step): {median('startup'):.2f}s (goal <= 6)")
    print(f"seconds per trial beyond its training: {median('in_process'):.2f}s in the trial's process, "
          f"{median('over_sweep'):.2f}s over the sweep (goal <= 0.3)")
    print(f"sweep / plain, start-up excluded: {median('after_startup'):.1f}s / {p:.1f}s = "
          f"{median('after_startup') / p:.2f} (goal <= 0.8; torch threads: plain {torch.get_num_threads()}, "
          f"trials {parts[0]['threads']})")


if __name__ == "__main__":
    main()
