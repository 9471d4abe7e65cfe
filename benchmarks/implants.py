"""Neural implants compared: no implant, the seed code's zero-initialized 1x1 conv, and the
low-rank replacement, on HAP-pruned ResNet-20 / digits (60% of channels chosen for
removal, the top 30% of those implanted; implants go on convolutions), over several seeds.
Accuracy after fine-tuning is measured on validation data (selection) and test data
(reported), with the compact model's params and
deployed latency.

Run: .venv/bin/python benchmarks/implants.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics

from raysparse.structured import ImplantedConv
from raysparse.train import fit

VARIANTS = {"none": {"implant_ratio": 0.0}, "zero": {"implant_ratio": 0.3, "implant": "zero"},
            "lowrank": {"implant_ratio": 0.3, "implant": "lowrank"}}


def config(seed: int, **sparsity) -> dict:
    return {
        "seed": seed, "epochs": 12, "model": {"name": "resnet20"},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "sparsity": {"method": "hap", "final_sparsity": 0.6, "prune_unit": "channels", "prune_end": 6,
                     "finetune_lr": 0.01, **sparsity},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    print("| implant | val accuracy | test accuracy | params | implanted convs | latency ms (batch 64) |")
    print("|---|---|---|---|---|---|")
    for name, sparsity in VARIANTS.items():
        runs, implanted = [], []
        for seed in range(args.seeds):
            models = []
            runs.append(fit(config(seed, **sparsity), lambda m, ctx, models=models: models.append(ctx.model)))
            implanted.append(sum(isinstance(m, ImplantedConv) for m in models[-1].modules()))

        def mean(key, runs=runs):
            return statistics.mean(r[key] for r in runs)

        print(f"| {name} | {mean('val_accuracy'):.4f} | {mean('test_accuracy'):.4f} | {mean('params'):.0f} "
              f"| {statistics.mean(implanted):.0f} | {mean('latency_ms_b64'):.3f} |", flush=True)


if __name__ == "__main__":
    main()
