"""Per-step time of masked sparse training against the dense step and torch.nn.utils.prune.

Three ways to train the same model, interleaved round by round in one process so that machine
noise hits all of them alike:
  dense        plain step: zero_grad, forward, backward, optimizer.step
  raysparse    the method hooks around the same step, masks (90% sparse, ERK) applied after
               every optimizer step: what every step between mask updates costs
  Sparsifier   a loop of the user's own with raysparse.Sparsifier: sparsifier.step() after every
               optimizer.step() (the same masks and hooks, reached through the public API)
  torch-prune  torch.nn.utils.prune (global L1, 90%): weight = weight_orig * mask recomputed in a
               forward pre-hook on every step (on the ViT, every weight but attention's out_proj,
               which its module never calls, so a hook there cannot run)
A mask update (GraNet: magnitude prune + drop-and-grow by gradient, with lineage hash and
packing) is timed on its own, interleaved with the rounds, and amortized over
``update_frequency`` steps: 100 (raysparse's default) and 1000 (GraNet's CIFAR setting).

Each model trains on its task: the classifiers on random images and labels, the GPT (the zoo's
``gpt``, causal LM) on random token ids; the loss goes through the task as in ``fit``.

Run: .venv/bin/python benchmarks/step_time.py [--rounds 7] [--only gpt]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.utils import prune

from raysparse.config import load_config
from raysparse.methods import get_method
from raysparse.sparsity.masks import weight_slots
from raysparse.tasks import build_task
from raysparse.train.sparsifier import Sparsifier
from raysparse.zoo import build_model

IMAGES = "classification"
TEXT = "causal_lm"
GPT = {"name": "gpt", "depth": 4, "width": 128, "heads": 4}
# title: (model spec, the data's info, task, batch, steps per round)
MODELS = {
    "resnet20 (CIFAR 32x32, batch 128)": ({"name": "resnet20"}, {"input_shape": (3, 32, 32), "num_classes": 10},
                                          IMAGES, 128, 10),
    "lenet300 (784-300-100, batch 128)": ({"name": "lenet300"}, {"input_shape": (1, 28, 28), "num_classes": 10},
                                          IMAGES, 128, 300),
    "vit (digits 8x8, 16 tokens, batch 128)": ({"name": "vit"}, {"input_shape": (1, 8, 8), "num_classes": 10},
                                               IMAGES, 128, 100),
    "gpt (4 blocks, width 128, 128 tokens, batch 16)": (GPT, {"vocab_size": 256, "block_size": 128}, TEXT, 16, 20),
}


def make(spec, info):
    torch.manual_seed(0)
    model = build_model(spec, info)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)


def example_batch(info, task, batch):
    if task == TEXT:
        return torch.randint(0, info["vocab_size"], (batch, info["block_size"]))
    return torch.randn(batch, *info["input_shape"]), torch.randint(0, info["num_classes"], (batch,))


def plain_step(model, opt, task, batch):
    opt.zero_grad(set_to_none=True)
    task.loss(model, batch)[0].backward()
    opt.step()


def granet(model, opt):
    cfg = load_config({"epochs": 10, "sparsity": {
        "method": "granet", "initial_sparsity": 0.9, "final_sparsity": 0.9, "prune_end": 1, "update_frequency": 100,
    }})
    method = get_method("granet")(cfg.sparsity, seed=0)
    method.attach(model, opt, steps_per_epoch=1000, total_steps=10_000)
    return method


def runners(spec, info, task):
    dense = make(spec, info)
    masked_model, masked_opt = make(spec, info)
    method = granet(masked_model, masked_opt)
    user_model, user_opt = make(spec, info)
    # masks from the start, and no update within the benchmark's steps: the steady-state step
    sparsifier = Sparsifier(user_model, user_opt, {"method": "granet", "initial_sparsity": 0.9,
                            "final_sparsity": 0.9, "prune_end": 1, "update_frequency": 100_000},
                            steps_per_epoch=100_000, epochs=10, task=task)

    def user_loop_step(batch):
        user_opt.zero_grad(set_to_none=True)
        task.loss(user_model, batch)[0].backward()
        user_opt.step()
        sparsifier.step()

    pruned = make(spec, info)
    # nn.MultiheadAttention computes with out_proj.weight without calling out_proj, so torch-prune's
    # forward pre-hook there would never recompute it: out_proj stays dense in that column
    layers = [slot for name, slot in weight_slots(pruned[0]).items() if not name.endswith(".out_proj")]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.9)

    def masked_step(batch):
        masked_opt.zero_grad(set_to_none=True)
        task.loss(masked_model, batch)[0].backward()
        method.after_backward(1)
        masked_opt.step()
        method.after_optimizer_step(1)  # step 1 is no update step: this is the steady state

    def update(batch):  # one GraNet mask update on the current gradients
        method.prune_by_magnitude(0.1, step=100)
        method.regrow(step=100)

    return {
        "dense": lambda batch: plain_step(*dense, task, batch),
        "raysparse": masked_step,
        "Sparsifier": user_loop_step,
        "torch-prune": lambda batch: plain_step(*pruned, task, batch),
    }, update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="", help="run the rows whose title contains this text")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, median ms")
    print("| model | dense | raysparse step | / dense | Sparsifier loop | / dense | update "
          "| amortized / dense at f=100 | at f=1000 | torch-prune | / dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for title, (spec, info, task_name, batch, steps) in MODELS.items():
        if args.only not in title:
            continue
        task = build_task(task_name)
        variants, update = runners(spec, info, task)
        data = example_batch(info, task_name, batch)
        times = {name: [] for name in [*variants, "update"]}
        for run in variants.values():  # warm-up
            for _ in range(3):
                run(data)
        for _ in range(args.rounds):
            for name, run in variants.items():
                start = time.perf_counter()
                for _ in range(steps):
                    run(data)
                times[name].append((time.perf_counter() - start) / steps * 1e3)
            start = time.perf_counter()
            update(data)
            times["update"].append((time.perf_counter() - start) * 1e3)
        med = {name: statistics.median(t) for name, t in times.items()}
        dense, masked, upd = med["dense"], med["raysparse"], med["update"]
        print(
            f"| {title} | {dense:.2f} | {masked:.2f} | {masked / dense:.3f} "
            f"| {med['Sparsifier']:.2f} | {med['Sparsifier'] / dense:.3f} | {upd:.1f} "
            f"| {(masked + upd / 100) / dense:.3f} | {(masked + upd / 1000) / dense:.3f} "
            f"| {med['torch-prune']:.2f} | {med['torch-prune'] / dense:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
