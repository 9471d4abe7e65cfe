"""Dense against deployed (``raysparse.deploy``): the masked network at dense speed, BatchNorm
folded (``inference_model``, what trials timed before), against the same network with each
layer on the kernel the deployment timing chose.

Masks: ERK (``raysparse.layer_densities``) at 80 / 90 / 95 / 98% sparsity, random weights kept per
layer (kernel speed depends on how many weights are kept, not which). Models: MLP
784-1024-1024-10 and LeNet-300-100 on 28x28 inputs, the zoo's ViT, ResNet-20 and VGG-16 on
CIFAR-shaped random inputs; and ``mlp-granet``: an MLP 64-1024-1024-10 trained on digits by
GraNet (8 epochs, ERK) to each sparsity, its learned masks. Batch 1 and 64; one thread
(torch.set_num_threads(1)). Dense and deployed are timed interleaved, round by round, in one run.

Run: .venv/bin/python benchmarks/deploy.py [--rounds 15 --models mlp,vit]
Prints dense ms, deployed ms and their ratio (goals: >= 3x at 95% on the MLP at batch 64,
>= 1.5x on the ViT at 95%, >= 0.97x everywhere), then ResNet-20's per-layer choices at 95%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import raysparse
from raysparse.sparsity.masks import prunable_weights
from raysparse.train.latency import inference_model
from raysparse.zoo import build_model

MODELS = {
    "mlp": ({"name": "mlp", "hidden": [1024, 1024]}, (1, 28, 28)),
    "lenet300": ({"name": "lenet300"}, (1, 28, 28)),
    "vit": ({"name": "vit"}, (3, 32, 32)),
    "resnet20": ({"name": "resnet20"}, (3, 32, 32)),
    "vgg16": ({"name": "vgg16"}, (3, 32, 32)),
    "mlp-granet": ({"name": "mlp", "hidden": [1024, 1024]}, (1, 8, 8)),
}


def granet_trained(spec: dict, sparsity: float) -> torch.nn.Module:
    """The network GraNet trains on digits to ``sparsity`` (masks in its weights)."""
    config = {
        "seed": 0, "epochs": 8, "model": spec, "measure_latency": False,
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "lr_schedule": {"name": "cosine"},
        "sparsity": {"method": "granet", "distribution": "erk", "final_sparsity": sparsity, "prune_end": 5,
                     "update_frequency": 25},
    }
    trained = {}
    raysparse.train(config, report=lambda metrics, context: trained.update(model=context.export_model()))
    return trained["model"].eval()


@torch.no_grad()
def erk_masked(spec: dict, shape, sparsity: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, shape, 10).eval()
    densities = raysparse.layer_densities(model, 1.0 - sparsity, "erk")
    for name, weight in prunable_weights(model).items():
        keep = round(densities[name] * weight.numel())
        scores = torch.rand(weight.numel())
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[scores.topk(keep).indices] = True
        weight.mul_(mask.view_as(weight))
    return model


@torch.no_grad()
def interleaved_ms(models: dict, x: torch.Tensor, rounds: int) -> dict[str, float]:
    for model in models.values():
        model(x)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            begin = time.perf_counter()
            model(x)
            times[name].append((time.perf_counter() - begin) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sparsities", default="0.8,0.9,0.95,0.98")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} interleaved rounds per figure (median)")
    print(f"{'model':<10} {'sparsity':>8} {'batch':>5} {'dense ms':>9} {'deployed ms':>11} {'speedup':>7} "
          "sparse layers")
    plans = {}
    for key in args.models.split(","):
        spec, shape = MODELS[key]
        for sparsity in map(float, args.sparsities.split(",")):
            model = granet_trained(spec, sparsity) if key == "mlp-granet" else erk_masked(spec, shape, sparsity)
            dense = inference_model(model)
            for batch in (1, 64):
                x = torch.randn(batch, *shape)
                deployed = raysparse.deploy(model, x)
                ms = interleaved_ms({"dense": dense, "deployed": deployed}, x, args.rounds)
                plan = deployed.plan
                plans[key, sparsity, batch] = plan
                print(f"{key:<10} {sparsity:>8.0%} {batch:>5} {ms['dense']:>9.3f} {ms['deployed']:>11.3f} "
                      f"{ms['dense'] / ms['deployed']:>6.2f}x {plan.sparse_layers()}/{len(plan)}"
                      + (" (reverted)" if plan.reverted else ""), flush=True)
    for batch in (1, 64):
        if ("resnet20", 0.95, batch) in plans:
            print(f"\nResNet-20 at 95% sparsity, batch {batch}: per-layer choices")
            print(plans["resnet20", 0.95, batch])


if __name__ == "__main__":
    main()
