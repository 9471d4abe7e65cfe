"""The one training loop: every run (CLI, Python API, a Ray trial, a DDP worker) goes through
``fit``. It knows nothing about who listens: after each epoch it calls ``report(metrics,
context)``; Ray Tune, MLflow or a test plug in there."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raysparse.config import Config, load_config
from raysparse.methods import SparseMethod, get_method
from raysparse.sparsity.masks import MaskEvent, MaskSet
from raysparse.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from raysparse.train.metrics import evaluate, layer_flops, sparse_flops
from raysparse.train.optim import build_lr_schedule, build_optimizer
from raysparse.zoo import build_data, build_model, make_loader


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf: the run stops with this reason instead of training on garbage."""


@dataclass
class EpochContext:
    """What a report callback may need beyond the metrics."""

    mask_events: list[MaskEvent]  # mask updates since the previous report (lineage)
    masks: MaskSet
    model: nn.Module
    save_checkpoint: Callable[[str | Path], Path]
    export_model: Callable[[], nn.Module]  # a plain nn.Module with the masks in its weights


Report = Callable[[dict, EpochContext], None]

# what every report carries: the metrics a sweep may name as objectives
REPORTED_METRICS = (
    "val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_loss", "density", "flops_dense",
    "flops_sparse", "mask_churn", "epoch_seconds", "best_val_accuracy", "epoch", "lr",
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    config: Config | dict | str | Path,
    report: Report | None = None,
    *,
    model: nn.Module | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> dict:
    """Train one sparse network; returns the final metrics (plus the best validation epoch).

    ``checkpoint_dir`` writes a checkpoint after every epoch; ``resume_from`` continues a run
    from one, ending bit-identical to an uninterrupted run.
    """
    cfg = load_config(config)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    net = build_model(model if model is not None else cfg.model, data.input_shape, data.num_classes).to(device)

    rank, world = _process_group()
    # data.batch_size is the global batch: steps per epoch, and so every schedule in steps,
    # are the same whether a trial runs on one worker or several
    batch_size = math.ceil(cfg.data.get("batch_size", 64) / world)
    loader_seed = torch.Generator()
    train_loader = make_loader(
        data.train, batch_size=batch_size, shuffle=True, generator=loader_seed,
        augment=cfg.data.get("augment", False), num_workers=cfg.data.get("num_workers", 0), shard=(rank, world),
    )
    val_loader = make_loader(data.val, batch_size=512, shuffle=False, generator=None)
    test_loader = make_loader(data.test, batch_size=512, shuffle=False, generator=None)

    optimizer = build_optimizer(net, cfg.optimizer)
    steps_per_epoch = len(train_loader)
    method: SparseMethod = get_method(cfg.sparsity.method)(cfg.sparsity, seed=cfg.seed)
    method.attach(net, optimizer, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * cfg.epochs)
    # after attach: a method may add parameter groups (DST's thresholds) that the schedule must see
    schedule = build_lr_schedule(optimizer, cfg.lr_schedule, cfg.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    flops_dense, flops_by_layer = layer_flops(net, data.input_shape, device)
    # DDP broadcasts rank 0's weights and all-reduces gradients; the method works on the
    # unwrapped module (same parameters) and broadcasts rank 0's masks on every update
    trained = _data_parallel(net, device) if world > 1 else net

    start_epoch, best = 0, {"best_val_accuracy": -1.0, "best_epoch": 0}
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["lr_schedule"])
        method.load_state_dict(state["method"])
        restore_rng(state["rng"])
        start_epoch, best = state["epoch"], dict(state["best"])
        method.masks.drain_events()  # already logged by the run that wrote the checkpoint

    def checkpoint_state(epoch: int) -> dict:
        return {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_schedule": schedule.state_dict(), "method": method.state_dict(),
            "rng": capture_rng(), "epoch": epoch, "best": best, "config": cfg.to_dict(),
        }

    last_masks = method.masks.snapshot()
    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # the shuffle order depends only on (seed, epoch): a resumed run sees the same batches
        loader_seed.manual_seed(cfg.seed * 1_000_003 + epoch)
        train_loss = _train_epoch(trained, train_loader, optimizer, method, criterion, device, epoch * steps_per_epoch)
        schedule.step()
        epoch_seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"train_loss is {train_loss} at epoch {epoch + 1}; stopping the run")
        method.on_epoch_end(epoch)

        val_accuracy, val_loss = evaluate(net, val_loader, device)
        test_accuracy, test_loss = evaluate(net, test_loader, device)
        layer_density = method.masks.layer_density()
        if val_accuracy > best["best_val_accuracy"]:  # model selection on validation, never test
            best = {"best_val_accuracy": val_accuracy, "best_epoch": epoch + 1}
        metrics = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            "train_loss": train_loss,
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "density": method.masks.density(),
            "layer_density": layer_density,
            "flops_dense": flops_dense,
            "flops_sparse": sparse_flops(flops_dense, flops_by_layer, layer_density),
            "mask_churn": method.masks.churn_since(last_masks),
            "lr": lr,
            "epoch_seconds": epoch_seconds,
            **best,
        }
        last_masks = method.masks.snapshot()
        state_at_epoch = epoch + 1
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, checkpoint_state(state_at_epoch))
        if report is not None:
            context = EpochContext(
                mask_events=method.masks.drain_events(), masks=method.masks, model=net,
                save_checkpoint=lambda path, e=state_at_epoch: save_checkpoint(path, checkpoint_state(e)),
                export_model=lambda: method.export(net),
            )
            report(metrics, context)
    return metrics


def _process_group() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (a Ray Train worker), else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _data_parallel(net: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def _mean_over_ranks(value: float, device: torch.device) -> float:
    world = _process_group()[1]
    if world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return float(tensor) / world


def _train_epoch(net, loader, optimizer, method: SparseMethod, criterion, device, step: int) -> float:
    net.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(net(x), y)
        penalty = method.regularization_loss()
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(step)
        optimizer.step()
        method.after_optimizer_step(step)
        loss_sum += loss.detach() * y.numel()  # no .item() per step: it would sync the device
        seen += y.numel()
        step += 1
    return _mean_over_ranks(float(loss_sum) / max(seen, 1), device)
