"""How much faster could any sparse kernel make a model? Amdahl's bound from a profile.

Only the ops that multiply by a prunable weight (linear and convolution: ``aten::addmm``,
``aten::mm``, ``aten::mkldnn_convolution``, ...) get cheaper when weights are pruned; attention's
``bmm`` of activations by activations, softmax, normalisation and activations do not. If the
weight ops took no time at all, the model would run ``1 / (1 - share)`` times faster: no
deployment can beat that ceiling. One thread, the same models and inputs as benchmarks/deploy.py.

Run: .venv/bin/python benchmarks/deploy_ceiling.py [--models vit,mlp,resnet20 --rounds 5]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from raysparse.train.latency import inference_model
from raysparse.zoo import build_model

# the ops a pruned weight enters; everything else costs the same at any sparsity
WEIGHT_OPS = {"aten::addmm", "aten::mm", "aten::linear", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward",
              "aten::thnn_conv2d", "aten::_convolution", "aten::convolution", "aten::conv2d"}
MODELS = {
    "mlp": ({"name": "mlp", "hidden": [1024, 1024]}, (1, 28, 28)),
    "vit": ({"name": "vit"}, (3, 32, 32)),
    "resnet20": ({"name": "resnet20"}, (3, 32, 32)),
}


@torch.no_grad()
def weight_share(model: torch.nn.Module, x: torch.Tensor, rounds: int) -> float:
    for _ in range(3):
        model(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            model(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in WEIGHT_OPS) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("one thread; share = self time of the weight ops / all self time (torch.profiler)")
    print(f"{'model':<10} {'batch':>5} {'weight-op share':>16} {'ceiling':>8}")
    for name in args.models.split(","):
        spec, shape = MODELS[name]
        torch.manual_seed(0)
        model = inference_model(build_model(spec, shape, 10).eval())
        for batch in (1, 64):
            share = weight_share(model, torch.randn(batch, *shape), args.rounds)
            print(f"{name:<10} {batch:>5} {share:>16.3f} {1 / (1 - share):>7.2f}x")


if __name__ == "__main__":
    main()
