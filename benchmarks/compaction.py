"""Measured latency speedup of a HAP-compacted model against its FLOPs reduction.

ResNet-20 (CIFAR 32x32) with 50% of its channels removed through the channel plan and torch-
pruning's dependency graph, two ways: ``uniform`` (half of every layer's channels) and
``global`` (one global ranking; importance here is weight magnitude, latency depends on how
many channels each layer keeps, not which). Dense and compact models are timed interleaved,
round by round, at batch 64 and 1, both as deployed (``inference_model``: BatchNorm folded
into the convolutions) and eager.

Run: .venv/bin/python benchmarks/compaction.py [--rounds 7 --ratio 0.5]
Prints FLOPs ratio, measured speedup and speedup / FLOPs ratio (goal >= 0.8 at batch 64).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from raysparse.structured import apply_plan, channel_groups, group_importance, plan_pruning
from raysparse.train.latency import count_params, inference_model, measure_latency
from raysparse.train.metrics import layer_flops
from raysparse.zoo import build_model


def compact(model: torch.nn.Module, ratio: float, shape, ranking: str) -> torch.nn.Module:
    example = torch.zeros(1, *shape)
    compacted = copy.deepcopy(model)
    groups = channel_groups(compacted, example)
    if ranking == "uniform":  # equal score spread in every group: each loses the same share
        scores = {g.id: (torch.arange(g.channels, dtype=torch.float64) + 0.5) / g.channels for g in groups}
    else:
        importance = {
            name: module.weight.detach().flatten(1).pow(2).mean(1)
            for name, module in compacted.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
        }
        scores = group_importance(groups, importance)
    apply_plan(compacted, example, plan_pruning(groups, scores, ratio=ratio, unit="channels"))
    return compacted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    shape, device = (3, 32, 32), torch.device("cpu")
    torch.manual_seed(0)
    dense = build_model({"name": "resnet20"}, shape, 10).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, median ms")
    print("| plan | params | FLOPs ratio | form | batch | dense ms | compact ms | speedup | speedup / FLOPs ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ranking in ("uniform", "global"):
        small = compact(dense, args.ratio, shape, ranking).eval()
        flops_ratio = layer_flops(dense, shape, device)[0] / layer_flops(small, shape, device)[0]
        params = f"{count_params(dense)} -> {count_params(small)}"
        for form, prepare in (("deployed", inference_model), ("eager", lambda m: m)):
            pair = {"dense": prepare(dense), "compact": prepare(small)}
            for batch in (64, 1):
                times = {"dense": [], "compact": []}
                for _ in range(args.rounds):
                    for name, model in pair.items():
                        times[name].append(measure_latency(model, shape, batch=batch, device=device, budget_seconds=10))
                d, c = statistics.median(times["dense"]), statistics.median(times["compact"])
                print(f"| {ranking} {args.ratio:.0%} | {params} | {flops_ratio:.2f} | {form} | {batch} | {d:.2f} "
                      f"| {c:.2f} | {d / c:.2f} | {d / c / flops_ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
