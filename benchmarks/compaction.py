"""Measured latency speedup of a HAP-compacted model against its FLOPs reduction.

ResNet-20 (CIFAR 32x32) with 50% of its channels removed through the channel plan and torch-
pruning's dependency graph, two ways: ``uniform`` (half of every layer's channels) and
``global`` (one global ranking; importance here is weight magnitude, latency depends on how
many channels each layer keeps, not which). Dense and compact models are timed interleaved,
round by round, at batch 64 and 1, one thread (``--threads``), eager and ``folded``
(:func:`raysparse.structured.fold_batchnorm`: the deployed form).

The FLOPs ratio is torch.utils.flop_counter's: convolutions and matmuls only (a multiply-add is 2).
BatchNorm, ReLU, the residual additions and pooling are not counted; they shrink with the kept
share of channels, the convolutions with its square.

``--profile`` adds, per batch and plan, the folded pair timed layer by layer: every Conv2d / Linear /
BatchNorm / implant module run alone on the input it gets in the model (captured by a hook), its
speedup against its own FLOPs ratio, the compact layer's GFLOP/s, and its ``floor``: the same module
on a 1x1 input of the same channels, i.e. the fixed cost of one call that no channel removal reduces.
``outside layers`` is the whole model minus its layers: functional ReLU / additions and Python.

Run: .venv/bin/python benchmarks/compaction.py [--rounds 7 --ratio 0.5 --profile --channels-last]
Prints FLOPs ratio, measured speedup and speedup / FLOPs ratio (goal >= 0.8 at batch 1 and 64).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from raysparse.structured import (
    ImplantedConv,
    apply_plan,
    channel_groups,
    fold_batchnorm,
    group_importance,
    plan_pruning,
)
from raysparse.train.latency import count_params
from raysparse.train.metrics import layer_flops
from raysparse.zoo import build_model

SHAPE = (3, 32, 32)
TIMED_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, ImplantedConv)


def compact(model: nn.Module, ratio: float, shape, ranking: str) -> nn.Module:
    example = torch.zeros(1, *shape)
    compacted = copy.deepcopy(model)
    groups = channel_groups(compacted, example)
    if ranking == "uniform":  # equal score spread in every group: each loses the same share
        scores = {g.id: (torch.arange(g.channels, dtype=torch.float64) + 0.5) / g.channels for g in groups}
    else:
        importance = {
            name: module.weight.detach().flatten(1).pow(2).mean(1)
            for name, module in compacted.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))
        }
        scores = group_importance(groups, importance)
    apply_plan(compacted, example, plan_pruning(groups, scores, ratio=ratio, unit="channels"))
    return compacted


@torch.no_grad()
def median_ms(call, *, budget_seconds: float, warmup: int = 2) -> float:
    """Median ms of ``call()`` over about ``budget_seconds`` (at least 3 runs)."""
    for _ in range(warmup):
        call()
    times, started = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < budget_seconds:
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def interleaved(calls: dict, rounds: int, budget_seconds: float) -> dict[str, float]:
    """Median over rounds of each call's median, the calls taking turns within every round."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(median_ms(call, budget_seconds=budget_seconds))
    return {name: statistics.median(values) for name, values in times.items()}


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each timed layer receives in ``model``'s forward pass (implants' insides are not split)."""
    inputs, hooks, implants = {}, [], []
    for name, module in model.named_modules():  # parents come before their children
        if isinstance(module, TIMED_LAYERS) and not any(name.startswith(f"{other}.") for other in implants):
            implants += [name] if isinstance(module, ImplantedConv) else []
            hooks.append(module.register_forward_pre_hook(lambda _m, args, name=name: inputs.setdefault(name, args[0])))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return inputs


def describe(module: nn.Module) -> str:
    if isinstance(module, nn.BatchNorm2d):
        return f"BN {module.num_features}"
    if isinstance(module, nn.Linear):
        return f"fc {module.in_features}->{module.out_features}"
    if isinstance(module, ImplantedConv):
        return f"implanted {module.kept.in_channels}->{len(module.channel_order)}"
    kernel = "x".join(map(str, module.kernel_size))
    return f"{kernel}/{module.stride[0]} {module.in_channels}->{module.out_channels}"


def profile(dense: nn.Module, small: nn.Module, x: torch.Tensor, rounds: int) -> None:
    """Per-layer table of the pair (same module names: compaction keeps them), interleaved."""
    example = torch.zeros(1, *x.shape[1:])
    flops = {"dense": layer_flops(dense, example)[1], "compact": layer_flops(small, example)[1]}
    inputs = {"dense": layer_inputs(dense, x), "compact": layer_inputs(small, x)}
    models = {"dense": dense, "compact": small}
    budget = 0.02 if x.shape[0] == 1 else 0.1  # per layer and round: enough runs for a median
    print(f"\nper layer, batch {x.shape[0]}, us (median of {rounds} interleaved rounds)")
    print("| layer | dense | compact | map | dense us | compact us | speedup | FLOPs ratio | compact GFLOP/s "
          "| compact floor us |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"dense": 0.0, "compact": 0.0, "floor": 0.0}
    for name in inputs["dense"]:
        layer = {side: models[side].get_submodule(name) for side in models}
        given = {side: inputs[side][name] for side in models}
        one = given["compact"][:1]
        floor_input = one[:, :, :1, :1].contiguous() if one.dim() == 4 else one
        calls = {side: (lambda m=layer[side], v=given[side]: m(v)) for side in models}
        calls["floor"] = lambda m=layer["compact"], v=floor_input: m(v)
        us = {side: ms * 1e3 for side, ms in interleaved(calls, rounds, budget_seconds=budget).items()}
        for side in totals:
            totals[side] += us[side]
        ratio = flops["dense"].get(name, 0) / flops["compact"][name] if flops["compact"].get(name) else float("nan")
        gflops = flops["compact"].get(name, 0) * x.shape[0] / us["compact"] / 1e3
        size = "x".join(map(str, given["dense"].shape[2:])) or "-"
        print(f"| {name} | {describe(layer['dense'])} | {describe(layer['compact'])} | {size} | {us['dense']:.1f} "
              f"| {us['compact']:.1f} | {us['dense'] / us['compact']:.2f} | {ratio:.2f} | {gflops:.1f} "
              f"| {us['floor']:.1f} |")
    whole = {side: ms * 1e3 for side, ms in interleaved(
        {side: (lambda m=models[side]: m(x)) for side in models}, rounds, budget_seconds=0.1).items()}
    print(f"| whole model | | | | {whole['dense']:.1f} | {whole['compact']:.1f} | "
          f"{whole['dense'] / whole['compact']:.2f} | | | |")
    print(f"| sum of layers | | | | {totals['dense']:.1f} | {totals['compact']:.1f} | | | | {totals['floor']:.1f} |")
    outside = {side: whole[side] - totals[side] for side in models}
    print(f"| outside layers | | | | {outside['dense']:.1f} | {outside['compact']:.1f} | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    parser.add_argument("--profile", action="store_true", help="also time every layer of the folded pair")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    dense = build_model({"name": "resnet20"}, SHAPE, 10).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds, median ms, "
          f"{'channels_last' if args.channels_last else 'NCHW'}")
    print("| plan | params | FLOPs ratio | form | batch | dense ms | compact ms | speedup | speedup / FLOPs ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    profiles = []
    for ranking in ("uniform", "global"):
        small = compact(dense, args.ratio, SHAPE, ranking).eval()
        flops_ratio = layer_flops(dense, torch.zeros(1, *SHAPE))[0] / layer_flops(small, torch.zeros(1, *SHAPE))[0]
        params = f"{count_params(dense)} -> {count_params(small)}"
        for form, prepare in (("folded", fold_batchnorm), ("eager", lambda m: m)):
            pair = {"dense": prepare(dense), "compact": prepare(small)}
            pair = {name: model.to(memory_format=memory_format) for name, model in pair.items()}
            for batch in (64, 1):
                x = torch.randn(batch, *SHAPE).to(memory_format=memory_format)
                ms = interleaved({name: (lambda m=m, x=x: m(x)) for name, m in pair.items()}, args.rounds,
                                 budget_seconds=0.5 if batch == 64 else 0.2)
                speedup = ms["dense"] / ms["compact"]
                print(f"| {ranking} {args.ratio:.0%} | {params} | {flops_ratio:.2f} | {form} | {batch} "
                      f"| {ms['dense']:.2f} | {ms['compact']:.2f} | {speedup:.2f} | {speedup / flops_ratio:.2f} |",
                      flush=True)
                if args.profile and form == "folded":
                    profiles.append((ranking, pair, x))
    for ranking, pair, x in profiles:
        print(f"\n{ranking} {args.ratio:.0%}, folded:", end="")
        profile(pair["dense"], pair["compact"], x, args.rounds)


if __name__ == "__main__":
    main()
