"""What a pattern costs a mask update: GraNet's update (magnitude prune + drop-and-grow by gradient,
lineage hash and packing) under ``unstructured``, ``2:4`` and ``block:1x4``, at 50% sparsity.

The masked training step itself does not change with a pattern (the same one multiply per layer
after each optimizer step), so only the update is timed. The three patterns run interleaved round
by round on the same model and gradients; medians in ms, and the ratio to unstructured.

Run: .venv/bin/python benchmarks/pattern_updates.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from raysparse.config import load_config
from raysparse.methods import get_method
from raysparse.zoo import build_model

PATTERNS = ("unstructured", "2:4", "block:1x4")
MODELS = {
    "lenet300 (784-300-100)": ({"name": "lenet300"}, (1, 28, 28)),
    "resnet20 (CIFAR)": ({"name": "resnet20"}, (3, 32, 32)),
    "vit (digits, defaults)": ({"name": "vit"}, (1, 8, 8)),
}


def granet_under(pattern: str, spec: dict, shape: tuple[int, ...]):
    """A GraNet-ST method on a fresh model with gradients in place, and its one mask update."""
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = load_config({"epochs": 10, "sparsity": {
        "method": "granet", "pattern": pattern, "initial_sparsity": 0.5, "final_sparsity": 0.5, "prune_end": 1,
    }})
    method = get_method("granet")(cfg.sparsity, seed=0)
    method.attach(model, optimizer, steps_per_epoch=100, total_steps=1000)
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    nn.functional.cross_entropy(model(x), y).backward()

    def update(step: int) -> None:
        method.prune_by_magnitude(0.5, step)
        method.regrow(step)
        method.masks.drain_events()

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | " + " | ".join(f"{p} ms" for p in PATTERNS) + " | " +
          " | ".join(f"{p} / unstructured" for p in PATTERNS[1:]) + " |")
    print("|---" * (2 * len(PATTERNS)) + "|")
    for title, (spec, shape) in MODELS.items():
        updates = {p: granet_under(p, spec, shape) for p in PATTERNS}
        times = {p: [] for p in PATTERNS}
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for pattern, update in updates.items():
                start = time.perf_counter()
                update(100 * (round_ + 1))
                if round_:
                    times[pattern].append((time.perf_counter() - start) * 1e3)
        med = {p: statistics.median(t) for p, t in times.items()}
        print(f"| {title} | " + " | ".join(f"{med[p]:.1f}" for p in PATTERNS) + " | " +
              " | ".join(f"{med[p] / med['unstructured']:.2f}" for p in PATTERNS[1:]) + " |")


if __name__ == "__main__":
    main()
