"""Orchestration cost: a 16-trial digits sweep through raysparse (local Ray, 2 trials at a time,
embedded MLflow server, every epoch logged and checkpointed) against the same 16 configs
trained one after another in one plain Python process (an in-process Optuna study, no Ray, no
MLflow). Rounds alternate the two so machine noise hits both.

Run: .venv/bin/python benchmarks/orchestration.py [--rounds 2 --trials 16 --epochs 30 --hidden 256 128]
Prints wall seconds per round and the ratio raysparse / plain (goal: <= 1.0 on 2 CPUs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import optuna

from raysparse.search import load_sweep, run_sweep
from raysparse.train import fit


def sweep_dict(trials: int, epochs: int, hidden: list[int] | None = None) -> dict:
    base = {
        "seed": 0, "epochs": epochs,
        "model": {"name": "mlp", "hidden": hidden or [256, 128]},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "sparsity": {"method": "granet", "final_sparsity": 0.9, "prune_end": epochs * 2 // 3, "update_frequency": 25},
    }
    return {
        "name": "bench-orchestration", "base": base, "num_samples": trials, "max_concurrent": 2,
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


def through_raysparse(raw: dict) -> float:
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()  # includes Ray start-up and the MLflow server start
        run_sweep(raw, home=home, verbose=False)
        seconds = time.perf_counter() - started
        from raysparse.tracking import stop_local_server

        stop_local_server(home)
    import ray

    ray.shutdown()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="MLP widths (trial size)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = sweep_dict(args.trials, args.epochs, args.hidden)
    plain, swept = [], []
    for round_ in range(args.rounds):
        plain.append(plain_process(raw))
        swept.append(through_raysparse(raw))
        print(f"round {round_ + 1}: plain {plain[-1]:.1f}s, raysparse {swept[-1]:.1f}s", flush=True)
    p, s = statistics.median(plain), statistics.median(swept)
    print(f"| {args.trials} trials x {args.epochs} epochs, digits MLP {args.hidden} | plain process {p:.1f}s "
          f"| raysparse sweep {s:.1f}s | ratio {s / p:.2f} |")


if __name__ == "__main__":
    main()
