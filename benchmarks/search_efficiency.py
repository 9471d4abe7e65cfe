"""Does the search pay? Best validation accuracy found against training epochs spent, for random
search, TPE, TPE with ASHA and PBT through `raysparse sweep`, and the seed papers' default
configurations, on digits at 98% sparsity (where configurations really differ: 0.08 to 0.97
validation accuracy), over several seeds.

Run: .venv/bin/python benchmarks/search_efficiency.py [--seeds 5 --trials 24 --epochs 16]
     [--strategies random tpe tpe_asha pbt defaults] [--out DIR] [--plot PATH]

Every strategy searches one space (method, regrowth ratio and decay, update frequency, pruning
window, learning rate) under one budget: ``--trials`` x ``--epochs`` epochs. A trial counts once
it has trained to the last epoch (a network the sweep logged: final masks and model), at its
final validation accuracy; a trial ASHA stopped counts its epochs and no accuracy. Epochs are
summed in the order trials started (two run at a time). PBT trains
a population side by side, so its curve is the best final-density report of the population
after each epoch of all its members. A dense stage (`pretrain:`) would count its epochs once.

Results per (strategy, seed) are kept as JSON in ``--out`` (a rerun skips those present), then
the table (epochs each needs to reach random search's median final best) and the plot are drawn.
Nothing here is asserted: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

TARGET_SPARSITY = 0.98
STRATEGIES = ("random", "tpe", "tpe_asha", "pbt", "defaults")
HERE = Path(__file__).resolve().parent


def base_config(epochs: int, seed: int) -> dict:
    return {
        "seed": seed, "epochs": epochs, "measure_latency": False,
        "model": {"name": "mlp", "hidden": [256, 128]},
        # a larger validation split than the default: 360 images tell close trials apart
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.2},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "lr_schedule": {"name": "cosine"},
        "sparsity": {"method": "granet", "distribution": "erk", "final_sparsity": TARGET_SPARSITY,
                     "prune_start": 0, "prune_end": epochs // 2, "update_frequency": 25},
    }


def search_space(epochs: int) -> dict:
    regrows = ["granet", "rigl", "set"]
    window = ["gmp", "granet", "dst"]
    return {
        "sparsity.method": {"choice": ["gmp", "granet", "rigl", "set", "dst"]},
        "sparsity.regrowth_ratio": {"uniform": [0.05, 0.7], "when": {"sparsity.method": regrows}},
        "sparsity.regrowth_decay": {"choice": ["cosine", "linear", "constant"], "when": {"sparsity.method": regrows}},
        "sparsity.update_frequency": {"choice": [10, 25, 50, 100]},
        "sparsity.prune_start": {"int": [0, epochs // 4], "when": {"sparsity.method": window}},
        "sparsity.prune_end": {"int": [epochs // 4 + 1, epochs * 3 // 4], "when": {"sparsity.method": window}},
        "optimizer.lr": {"loguniform": [0.003, 0.5]},
    }


def sweep_dict(strategy: str, seed: int, trials: int, epochs: int) -> dict:
    sweep = {
        "name": f"search-efficiency-{strategy.replace('_', '-')}-s{seed}", "seed": seed,
        "base": base_config(epochs, seed), "space": search_space(epochs), "objectives": {"val_accuracy": "max"},
        "max_concurrent": 2, "num_samples": trials, "early_stopping": False,
        # PBT draws its first population at random (Tune's PBT takes no Optuna searcher)
        "sampler": "random" if strategy in ("random", "pbt") else "tpe",
    }
    if strategy == "tpe_asha":
        # judged after a quarter of training, a third kept per rung: rungs at epochs/4 and 3/4;
        # twice the trials are sampled and the curve is cut at the same budget
        sweep.update(num_samples=2 * trials,
                     early_stopping={"grace_period": max(1, epochs // 4), "reduction_factor": 3})
    elif strategy == "pbt":
        # a population of a third of the trials: at most a third of the budget in epochs
        sweep.update(num_samples=max(2, trials // 3), early_stopping={
            "scheduler": "pbt", "interval": max(1, epochs // 4),
            "mutate": ["sparsity.regrowth_ratio", "optimizer.lr", "sparsity.update_frequency"]})
    return sweep


def paper_defaults(epochs: int, seed: int) -> dict[str, dict]:
    """Each method at raysparse's defaults, which follow its paper (GraNet: regrowth 0.5, cosine
    decay, pruning over the first half; DST: trainable thresholds steered to the target; RigL 0.5
    cosine; GMP's cubic schedule), at the base config's learning rate and update frequency."""
    configs = {}
    for method in ("granet", "dst", "rigl", "gmp"):
        config = base_config(epochs, seed)
        config["sparsity"] = {**config["sparsity"], "method": method}
        configs[method] = config
    return configs


def trial_records(result) -> list[dict]:
    """One record per trial from Tune's results: its index, the epochs it trained (every report,
    redone ones included), and its final metrics if it reached the last epoch."""
    epochs = result.sweep.base["epochs"]
    # Tune's trial ids are random under Optuna: the order trials started in is their MLflow runs'
    runs = result.to_dataframe()
    started = dict(zip(runs["trial_id"], runs["start_time"]))
    density_limit = 1 - TARGET_SPARSITY + 1e-3
    records = []
    for trial in result.grid:
        frame = trial.metrics_dataframe
        if frame is None or frame.empty:
            continue
        last = frame.iloc[-1]
        finished = int(last["epoch"]) == epochs and float(last["density"]) <= density_limit
        history = [(int(r.epoch), float(r.val_accuracy), float(r.test_accuracy), float(r.density))
                   for r in frame.itertuples()]
        records.append({
            "trial": str(last["trial_id"]), "started": str(started.get(last["trial_id"], "")),
            # PBT reports every epoch and an exploit redoes epochs: count its reports; without a
            # scheduler Tune may get fewer reports than epochs, so count the epoch reached
            "epochs_trained": len(frame) if result.sweep.early_stopping.pbt else int(last["epoch"]),
            "finished": finished, "val": float(last["val_accuracy"]) if finished else None,
            "test": float(last["test_accuracy"]) if finished else None, "history": history,
            "method": trial.config.get("sparsity.method"),
        })
    return sorted(records, key=lambda r: r["started"])


def run_strategy(strategy: str, seed: int, trials: int, epochs: int, home: str) -> dict:
    from raysparse.search import run_sweep

    result = run_sweep(sweep_dict(strategy, seed, trials, epochs), home=home, verbose=False)
    return {"strategy": strategy, "seed": seed, "epochs": epochs, "pretrain_epochs": result.pretrain_epochs,
            "trials": trial_records(result)}


def run_defaults(seed: int, epochs: int) -> dict:
    from raysparse.train import fit

    rows = []
    for method, config in paper_defaults(epochs, seed).items():
        metrics = fit(config)
        rows.append({"method": method, "epochs_trained": epochs, "val": metrics["val_accuracy"],
                     "test": metrics["test_accuracy"], "density": metrics["density"]})
    return {"strategy": "defaults", "seed": seed, "configs": rows}


def curve(run: dict, budget: int) -> list[tuple[int, float, float]]:
    """(cumulative epochs, best validation accuracy so far, its test accuracy), cut at ``budget``."""
    spent, best, points = run.get("pretrain_epochs", 0), (float("-inf"), float("nan")), []
    if run["strategy"] == "pbt":  # the population side by side: after each epoch of every member
        trials, epochs = run["trials"], run["epochs"]
        for report in range(1, max(len(t["history"]) for t in trials) + 1):
            spent += sum(1 for t in trials if len(t["history"]) >= report)
            if spent > budget:
                break
            # a member counts once it has trained its last epoch, as a trial does
            done = [(v, te) for t in trials for (e, v, te, d) in t["history"][:report]
                    if e == epochs and d <= 1 - TARGET_SPARSITY + 1e-3]
            best = max([best, *done])
            points.append((spent, best[0], best[1]))
        return points
    for trial in run["trials"]:
        spent += trial["epochs_trained"]
        if spent > budget:
            break
        if trial["finished"] and (trial["val"], trial["test"]) > best:
            best = (trial["val"], trial["test"])
        points.append((spent, best[0], best[1]))
    return points


def epochs_to_reach(points, target: float) -> int | None:
    return next((spent for spent, val, _ in points if val >= target), None)


def summarize(runs: list[dict], budget: int) -> list[str]:
    by_strategy: dict[str, list[dict]] = {}
    for run in runs:
        by_strategy.setdefault(run["strategy"], []).append(run)
    random_best = [curve(r, budget)[-1][1] for r in by_strategy.get("random", [])]
    target = statistics.median(random_best) if random_best else None
    lines = [f"target: random search's median final best validation accuracy {target}, budget {budget} epochs",
             "| strategy | seeds | epochs spent (median) | best val (mean, min-max) | its test (mean) "
             "| epochs to reach random's median best (median; seeds that reached it) |",
             "|---|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        group = by_strategy.get(strategy)
        if not group:
            continue
        if strategy == "defaults":
            for method in ("granet", "dst", "rigl", "gmp"):
                rows = [c for r in group for c in r["configs"] if c["method"] == method]
                vals = [c["val"] for c in rows]
                reached = sum(v >= target for v in vals) if target is not None else 0
                lines.append(f"| paper default: {method} | {len(rows)} | {rows[0]['epochs_trained']} | "
                             f"{statistics.mean(vals):.3f} ({min(vals):.3f}-{max(vals):.3f}) | "
                             f"{statistics.mean(c['test'] for c in rows):.3f} | "
                             f"{rows[0]['epochs_trained'] if reached else '-'} ({reached}/{len(rows)}) |")
            continue
        curves = [curve(r, budget) for r in group]
        bests = [c[-1][1] for c in curves]
        tests = [c[-1][2] for c in curves]
        reach = [epochs_to_reach(c, target) for c in curves] if target is not None else []
        hit = [r for r in reach if r is not None]
        median_reach = f"{statistics.median(hit):.0f}" if len(hit) * 2 > len(reach) else "not reached by most"
        lines.append(f"| {strategy} | {len(group)} | {statistics.median(c[-1][0] for c in curves):.0f} | "
                     f"{statistics.mean(bests):.3f} ({min(bests):.3f}-{max(bests):.3f}) | "
                     f"{statistics.mean(tests):.3f} | {median_reach} ({len(hit)}/{len(reach)}) |")
    return lines


def plot(runs: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = list(range(1, budget + 1))
    populations = [r for r in runs if r["strategy"] == "pbt"]
    if populations:  # a population gives its networks at its end: one point per seed, not a curve
        ends = [curve(r, budget)[-1] for r in populations]
        ax.scatter([e[0] for e in ends], [e[1] for e in ends], marker="o", s=22, color="tab:red",
                   label=f"pbt, population of {len(populations[0]['trials'])} (each of {len(ends)} seeds)")
    for strategy in ("random", "tpe", "tpe_asha"):
        curves = [curve(r, budget) for r in runs if r["strategy"] == strategy]
        if not curves:
            continue
        # nothing finished yet is no point on the curve (-inf in the records)
        # and past what a run spent (PBT's population stops at its epochs) neither
        at = [[max([v for s, v, _ in c if s <= x and v > float("-inf")], default=float("nan"))
               if x <= c[-1][0] else float("nan") for x in grid] for c in curves]
        median = [statistics.median(col) if all(v == v for v in col) else float("nan") for col in zip(*at)]
        (line,) = ax.plot(grid, median, label=f"{strategy} (median of {len(curves)} seeds)")
        ax.fill_between(grid, [min(col) for col in zip(*at)], [max(col) for col in zip(*at)],
                        color=line.get_color(), alpha=0.07, linewidth=0)
    for run in (r for r in runs if r["strategy"] == "defaults"):
        for config in run["configs"]:
            ax.scatter(config["epochs_trained"], config["val"], marker="x", color="black", s=18)
    ax.scatter([], [], marker="x", color="black", label="paper defaults (each method and seed)")
    random_best = [curve(r, budget)[-1][1] for r in runs if r["strategy"] == "random"]
    if random_best:
        ax.axhline(statistics.median(random_best), color="grey", linestyle=":", linewidth=1,
                   label="random search's median final best")
    ax.set(xlabel="training epochs spent (cumulative)", ylabel="best validation accuracy at 98% sparsity",
           title="Search efficiency: digits MLP at 98% sparsity (band: min-max over seeds)", ylim=(0.8, 1.0))
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24, help="random search's trials: the budget in trials")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "raysparse-search-efficiency")
    parser.add_argument("--plot", type=Path, default=HERE / "figures" / "search_efficiency.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.trials * args.epochs
    with tempfile.TemporaryDirectory() as home:
        for seed in range(args.seeds):  # seeds outer, strategies inner: machine drift hits all alike
            for strategy in args.strategies:
                path = args.out / f"{strategy}-{args.trials}x{args.epochs}-s{seed}.json"
                if path.exists():
                    continue
                run = run_defaults(seed, args.epochs) if strategy == "defaults" else \
                    run_strategy(strategy, seed, args.trials, args.epochs, home)
                path.write_text(json.dumps(run))
                print(f"done: {strategy} seed {seed}", flush=True)
        from raysparse.tracking import stop_local_server

        stop_local_server(home)
    runs = [json.loads(p.read_text()) for p in sorted(args.out.glob(f"*-{args.trials}x{args.epochs}-s*.json"))]
    for line in summarize(runs, budget):
        print(line)
    plot(runs, budget, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
