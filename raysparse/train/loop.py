"""The one training loop: every run (CLI, Python API, a Ray trial, a DDP worker) goes through
``fit``. It knows nothing about who listens: after each epoch it calls ``report(metrics,
context)``; Ray Tune, MLflow or a test plug in there."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raysparse.config import Config, load_config, read_yaml
from raysparse.errors import ConfigError, TrainingDiverged
from raysparse.methods import SparseMethod, get_method
from raysparse.robustness.evaluate import FINAL_METRICS, robustness_metrics
from raysparse.sparsity.masks import MaskEvent, MaskSet, weights_outside
from raysparse.tasks import DEFAULT_TASK, MAX, Task, build_task
from raysparse.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_state_dict_file,
    restore_rng,
    save_checkpoint,
    state_hash,
)
from raysparse.train.latency import (
    DEPLOYED_METRICS,
    LATENCY_BATCHES,
    count_params,
    deployed_latency,
    inference_model,
    measure_latency,
)
from raysparse.train.memory import check_fits_in_memory
from raysparse.train.metrics import layer_flops, sparse_flops
from raysparse.train.optim import build_lr_schedule, build_optimizer
from raysparse.train.shared_start import SharedStart, build_on_meta, start_key
from raysparse.zoo import make_loader
from raysparse.zoo.user_code import (
    build_network,
    build_splits,
    check_model,
    is_user_code,
    model_field,
    one_line,
    with_python_objects,
)


@dataclass
class EpochContext:
    """What a report callback may need beyond the metrics."""

    mask_events: list[MaskEvent]  # mask updates since the previous report (lineage)
    masks: MaskSet
    model: nn.Module
    save_checkpoint: Callable[[str | Path], None]  # and its lineage row, in masks.events until drained
    export_model: Callable[[], nn.Module]  # a plain nn.Module with the masks in its weights
    example_input: Any  # a real model input of two examples (CPU), for exporting the model; None: unknown
    data_info: dict  # what the data told the model factory (input_shape, num_classes; vocab_size): to build it again


Report = Callable[[dict, EpochContext], None]

# what reports carry: the metrics a sweep may name as objectives (FINAL_METRICS: last report only)
# (besides these, every task metric as val_<metric>, test_<metric> and best_val_<main metric>)
REPORTED_METRICS = FINAL_METRICS + (
    "train_loss", "density", "flops_dense", "flops_sparse", "mask_churn", "epoch_seconds", "epoch", "lr", "params",
    "params_dense", "latency_dense_ms_b1", "latency_dense_ms_b64", "weights_outside_masks",
) + DEPLOYED_METRICS


def task_metrics(task: Task | type[Task], other_texts: tuple[str, ...] = ()) -> dict[str, str]:
    """Every metric a run of ``task`` reports that names the task, with its direction
    (``val_<main metric>`` first); a task object's reference metrics too (``kl_to_dense``), and
    those of the ``evaluate_on`` data named in ``other_texts``."""
    splits = ("val", "test", *other_texts)
    metrics = {f"{split}_{name}": direction for split in splits for name, direction in task.metrics.items()}
    main = next(iter(task.metrics))
    against_dense = task.reference_metrics() if isinstance(task, Task) else {}
    return {**metrics, f"best_val_{main}": task.metrics[main], **against_dense}


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
    model: nn.Module | Callable | None = None,
    data: Callable | None = None,
    task: Task | type[Task] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    shared_start: SharedStart | None = None,
) -> dict:
    """Train one sparse network; returns the final metrics (plus the best validation epoch).

    ``model`` (an nn.Module class or a callable building one, or an instance used as is) and
    ``data`` (a callable returning ``{"train": ..., "test": ...}``) replace the config's zoo
    entries (see ``raysparse.zoo.user_code``); ``task`` (a Task subclass or instance) the config's
    ``task``. ``checkpoint_dir`` writes a checkpoint after
    every epoch; ``resume_from`` continues a run from one, ending bit-identical to an
    uninterrupted run. ``shared_start``: the dense weights and the method's calibration
    statistics a post-training sweep computed once (``train/shared_start.py``), used where its
    key matches this config.
    """
    cfg = _config_with_objects(config, model, data, task)
    state = None if resume_from is None else resumable_checkpoint(resume_from, cfg.epochs)
    run = _Run(cfg, model, data, task, shared_start)
    if state is not None:
        run.restore(state)
    else:
        run.method.on_train_start()
        run.follow_structure()
    metrics: dict = {}
    if run.cfg.epochs == 0:  # post-training pruning: the method pruned at on_train_start; evaluated once
        metrics = run.evaluation(0)
        if report is not None:
            report(metrics, run.context(0))
        return metrics
    for epoch in range(run.start_epoch, run.cfg.epochs):
        metrics = run.epoch(epoch)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, run.checkpoint_state(epoch + 1))
        if report is not None:
            report(metrics, run.context(epoch + 1))
    return metrics


CHECKPOINT_KEYS = ("model", "optimizer", "lr_schedule", "method", "rng", "epoch", "best")


class NothingLeftToTrain(ConfigError):
    """Resuming a run that already finished: not a failure, but nothing to do."""


def resumable_checkpoint(path: str | Path, epochs: int, field: str = "resume_from") -> dict:
    """The checkpoint at ``path`` (fingerprints checked) if a run of ``epochs`` can continue from
    it; a ConfigError naming ``field`` and the file if not, e.g. when it holds the last epoch."""
    state = load_checkpoint(path, field)
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing or not isinstance(state["epoch"], int):
        raise ConfigError(field, f"{str(path)!r} is not a checkpoint of raysparse's loop (it has no "
                          f"{', '.join(missing) or 'epoch number'})")
    if state["epoch"] >= epochs:
        raise NothingLeftToTrain(field, f"{str(path)!r} holds epoch {state['epoch']} of {epochs}: nothing left "
                                 "to train")
    return state


def _config_with_objects(config: Config | dict | str | Path, model, data, task=None) -> Config:
    """The config, its model / data / task blocks marked as built by the given Python objects."""
    if model is not None or data is not None or task is not None:
        raw = config.to_dict() if isinstance(config, Config) else config
        raw = read_yaml(raw) if isinstance(raw, (str, Path)) else raw
        config = with_python_objects(raw, model, data, task) if isinstance(raw, dict) else raw
    cfg = load_config(config)
    if cfg.loop is not None:
        raise ConfigError("loop", f"names a training loop of yours ({cfg.loop}); it runs in "
                          "raysparse.sweep(space, loop=fn), the built-in loop trains the model and data blocks")
    return cfg


class _Run:
    """Everything one training run holds. A method may rebuild the model's structure (HAP's
    channel compaction): then the optimizer, LR schedule, DDP wrapper and cost metrics follow
    (``follow_structure``), the same way whether it happens live or on resume."""

    def __init__(self, cfg: Config, model, data_source, task=None, shared: SharedStart | None = None):
        self.cfg, self.device = cfg, pick_device(cfg.device)
        seed_everything(cfg.seed)
        self.task = build_task(cfg.task, label_smoothing=cfg.label_smoothing, given=task)
        self.data = data = build_splits(cfg.data, cfg.seed, self.task, given=data_source)
        # a class or factory builds a fresh network per run; an instance is trained as it is
        self.model_source = None if isinstance(model, nn.Module) else model
        if model is None and not is_user_code(cfg.model):  # before allocating: a trial's own node decides
            check_fits_in_memory(cfg, data.info)
        self.shared = shared if shared is not None and model is None and shared.key == start_key(cfg) else None
        if self.shared is None:
            self.net = build_network(cfg.model, data.info, given=model)
        else:  # the sweep's one copy of the dense weights: no init, no read from disk
            self.net = build_on_meta(lambda: build_network(cfg.model, data.info))
            self.shared.load_into(self.net)
        # (a shared start's network and data were checked where it was computed: the same key)
        if self.shared is None and (model is not None or is_user_code(cfg.model) or is_user_code(cfg.data)
                                    or cfg.task != DEFAULT_TASK):
            check_model(self.net, data, self.task, model_field(cfg.model, model))
        self.net.to(self.device)
        if cfg.init_from is not None:  # e.g. a pretrained network for one-shot or HAP pruning
            load_into(self.net, cfg.init_from, "init_from", self.device)
        self.rank, self.world = _process_group()
        # data.batch_size is the global batch: steps per epoch, and so every schedule in steps,
        # are the same whether a trial runs on one worker or several
        self.batch_size = batch_size = math.ceil(cfg.data.get("batch_size", 64) / self.world)
        self.loader_seed = torch.Generator()
        self.train_loader = make_loader(
            data.train, batch_size=batch_size, shuffle=True, generator=self.loader_seed,
            augment=cfg.data.get("augment", False), num_workers=cfg.data.get("num_workers", 0),
            shard=(self.rank, self.world),
        )
        self.val_loader = make_loader(data.val, batch_size=512, shuffle=False, generator=None)
        self.test_loader = make_loader(data.test, batch_size=512, shuffle=False, generator=None)
        # other texts to evaluate on (evaluate_on): each one's test split, built as data is
        self.other_loaders = {
            name: make_loader(build_splits(spec, cfg.seed, self.task).test, batch_size=512, shuffle=False,
                              generator=None)
            for name, spec in cfg.evaluate_on.items()}
        self.steps_per_epoch = len(self.train_loader)

        self.optimizer = build_optimizer(self.net, cfg.optimizer)
        self.method: SparseMethod = get_method(cfg.sparsity.method)(cfg.sparsity, seed=cfg.seed)
        self.method.bind(task=self.task, train_batches=self._sample_batches,
                         example_input=lambda: self.example_input(1))
        if self.shared is not None:
            self.method.shared_statistics = self.shared.torch_statistics()
        # the network as built, before any mask: what the task's reference metrics compare with (kl_to_dense)
        self.reference_batches = list(itertools.islice(self._sample_batches(), self.task.reference_batches()))
        self.reference = self.task.capture_reference(self.net, self.reference_batches, self.device) \
            if self.reference_batches else None
        total_steps = self.steps_per_epoch * cfg.epochs
        self.method.attach(self.net, self.optimizer, steps_per_epoch=self.steps_per_epoch, total_steps=total_steps)
        self._count_weights_outside_masks()
        # after attach: a method may add parameter groups (DST's thresholds) that the schedule must see
        self.schedule = build_lr_schedule(self.optimizer, cfg.lr_schedule, max(1, cfg.epochs))
        self.params_dense = count_params(self.net)
        self._measure_structure()
        self.flops_dense = self.flops_now  # of the network as built, before any structural change
        self.best_key = f"best_val_{self.task.main_metric}"
        self.start_epoch, self.best = 0, {self.best_key: None, "best_epoch": 0}
        self.last_masks = self.method.masks.snapshot()
        # two real examples a trial exports the model with: the same every epoch, read once
        self.export_example = self.example_input(2, torch.device("cpu"))

    def _count_weights_outside_masks(self) -> None:
        """Weights that do a matmul but that the layer selection (``include`` / ``exclude``) leaves
        out of the method's masks: they stay dense, and ``density`` counts them, so a trial never
        reports 0.10 over part of the network when the whole is at 0.43. Said once, here."""
        self.outside = weights_outside(self.net, self.method.masks.weights)
        self.masked_size = sum(w.numel() for w in self.method.masks.weights.values())  # before any compaction
        if self.outside and self.rank == 0:
            outside = sum(self.outside.values())
            total = outside + self.masked_size
            print(f"raysparse: {len(self.outside)} weight tensors that do a matmul ({outside:,} of {total:,} weights) "
                  f"are outside the masks (sparsity.include/exclude, or a head tied to the embedding), stay dense "
                  f"and count in density: "
                  f"{_listing(list(self.outside))}", file=sys.stderr, flush=True)

    def density(self) -> float:
        """Kept fraction of every weight that does a matmul: the method's masked weights at the
        method's density, those outside its masks at 1."""
        if not self.outside:
            return self.method.density()
        outside = sum(self.outside.values())
        return (self.method.density() * self.masked_size + outside) / (self.masked_size + outside)

    def _sample_batches(self):
        """Shuffled training batches for a method's own estimates (HAP's Hessian), from a
        generator of their own so the training batches do not change."""
        generator = torch.Generator().manual_seed(self.cfg.seed + 17)
        return iter(make_loader(self.data.train, batch_size=self.batch_size, shuffle=True, generator=generator))

    def example_input(self, size: int, device: torch.device | None = None):
        """A model input of ``size`` real validation examples (the task says how they look)."""
        return self.task.example_input(self.data.val, size, device or self.device)

    def _measure_structure(self) -> None:
        """FLOPs, parameters and latency of the model as it is now; DDP wraps this structure."""
        device = self.device
        if self.shared is not None and not hasattr(self, "flops_now"):  # the dense network's, measured once
            self.flops_now, self.flops_by_layer = self.shared.flops
        else:
            self.flops_now, self.flops_by_layer = layer_flops(self.net, self.example_input(1))
        self.costs = {"params": count_params(self.net), "params_dense": self.params_dense}
        if self.cfg.measure_latency:  # at dense speed (BatchNorm folded): the deployed form is timed at the end
            folded = inference_model(self.net)
            for batch in LATENCY_BATCHES:
                self.costs[f"latency_dense_ms_b{batch}"] = measure_latency(folded, self.example_input(batch),
                                                                           device=device)
        # DDP broadcasts rank 0's weights and all-reduces gradients; the method works on the
        # unwrapped module (same parameters) and broadcasts rank 0's masks on every update
        self.trained = _data_parallel(self.net, device) if self.world > 1 else self.net

    def follow_structure(self) -> None:
        """After a method rebuilt the model: a fresh optimizer (at the learning rate the method
        asks for) and LR schedule over the epochs left, and new cost figures."""
        change = self.method.take_restructure()
        if change is None:
            return
        cfg = self.cfg
        lr = change.lr if change.lr is not None else cfg.optimizer.lr
        self.optimizer = build_optimizer(self.net, dataclasses.replace(cfg.optimizer, lr=lr))
        self.method.use_optimizer(self.optimizer)
        self.schedule = build_lr_schedule(self.optimizer, cfg.lr_schedule, max(1, cfg.epochs - change.epochs_done))
        self._measure_structure()
        self.last_masks = self.method.masks.snapshot()

    def restore(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])  # first: it may rebuild the structure
        self.follow_structure()
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["lr_schedule"])
        self._continue_at_configured_lr(state.get("config"))
        restore_rng(state["rng"])
        self.start_epoch, self.best = state["epoch"], dict(state["best"])
        restored = self.fingerprints()
        saved = state.get("fingerprints", restored)  # (checkpoints written before they existed have none)
        if restored != saved:
            differ = " and ".join(k for k in saved if saved[k] != restored.get(k))
            raise RuntimeError(f"the checkpoint gave back other {differ} than it saved (sha256 differs)")
        self.method.masks.drain_events()  # already logged by the run that wrote the checkpoint
        # the lineage says where a retried or resumed run picked up, and from which masks and weights
        step = self.start_epoch * self.steps_per_epoch
        self.method.masks.mark(step=step, reason=f"resume at epoch {self.start_epoch}",
                               weights_hash=restored["weights"])
        self.last_masks = self.method.masks.snapshot()

    def _continue_at_configured_lr(self, saved_config) -> None:
        """A checkpoint restored under another ``optimizer.lr`` than it was saved with (PBT perturbs
        it) trains on at the configured rate: the optimizer and schedule state hold the saved one, so
        every group's rate and the schedule's base rates are scaled by configured / saved, keeping
        the schedule's shape. The same rate (a retry) changes nothing."""
        optimizer = saved_config.get("optimizer") if isinstance(saved_config, dict) else None
        saved = optimizer.get("lr") if isinstance(optimizer, dict) else None
        if not isinstance(saved, (int, float)) or saved <= 0 or saved == self.cfg.optimizer.lr:
            return
        scale = self.cfg.optimizer.lr / saved
        for group in self.optimizer.param_groups:
            group["lr"] *= scale
            if "initial_lr" in group:
                group["initial_lr"] *= scale
        self.schedule.base_lrs = [lr * scale for lr in self.schedule.base_lrs]

    def fingerprints(self) -> dict[str, str]:
        """sha256 of the masks and of the weights: a checkpoint stores them, a restore checks them."""
        return {"masks": self.method.masks.content_hash(), "weights": state_hash(self.net.state_dict())}

    def checkpoint_state(self, epoch: int) -> dict:
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.schedule.state_dict(), "method": self.method.state_dict(),
            "rng": capture_rng(), "epoch": epoch, "best": self.best, "config": self.cfg.to_dict(),
            "fingerprints": self.fingerprints(),
        }

    def save_for_retry(self, path: str | Path, epoch: int) -> None:
        """A checkpoint a retried trial continues from, and a lineage row saying what it holds
        (its resume row must show the same masks and weights)."""
        state = self.checkpoint_state(epoch)
        save_checkpoint(path, state)
        self.method.masks.mark(step=epoch * self.steps_per_epoch, reason=f"checkpoint at epoch {epoch}",
                               weights_hash=state["fingerprints"]["weights"])

    def epoch(self, epoch: int) -> dict:
        cfg, method = self.cfg, self.method
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        # the shuffle order depends only on (seed, epoch): a resumed run sees the same batches
        self.loader_seed.manual_seed(cfg.seed * 1_000_003 + epoch)
        train_loss = _train_epoch(
            self.trained, self.train_loader, self.optimizer, method, self.task, self.device,
            epoch * self.steps_per_epoch,
        )
        self.schedule.step()
        epoch_seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"train_loss is {train_loss} at epoch {epoch + 1}; stopping the run")
        method.on_epoch_end(epoch)
        self.follow_structure()
        return self.evaluation(epoch + 1, train_loss=train_loss, lr=lr, epoch_seconds=epoch_seconds)

    def evaluation(self, epoch: int, **training) -> dict:
        """The metrics after ``epoch`` epochs (0: a network pruned without training, whose report
        has no training figures): validation, test, costs and the method's own."""
        cfg, method = self.cfg, self.method
        val = self.task.evaluate(self.net, self.val_loader, self.device)
        test = self.task.evaluate(self.net, self.test_loader, self.device)
        against_dense = {} if self.reference is None else \
            self.task.compare_to_reference(self.net, self.reference_batches, self.reference, self.device)
        others = {f"{name}_{metric}": value for name, loader in self.other_loaders.items()
                  for metric, value in self.task.evaluate(self.net, loader, self.device).items()}
        layer_density = method.layer_density()
        if self._better(val[self.task.main_metric]):  # model selection on validation, never test
            self.best = {self.best_key: val[self.task.main_metric], "best_epoch": epoch}
        last = epoch == cfg.epochs
        robust = self._robustness() if last and cfg.robustness is not None else {}
        # the trained network as deployed (sparse kernels where they pay), timed once, at the end
        deployed = deployed_latency(method.export(self.net), self.example_input, device=self.device) \
            if last and cfg.measure_latency else {}
        metrics = {
            **robust,
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            **training,  # train_loss, lr, epoch_seconds: none after epochs 0
            **{f"val_{name}": value for name, value in val.items()},
            **{f"test_{name}": value for name, value in test.items()},
            **against_dense,
            **others,
            "density": self.density(),
            "weights_outside_masks": sum(self.outside.values()),
            "layer_density": layer_density,
            "flops_dense": self.flops_dense,
            "flops_sparse": sparse_flops(self.flops_now, self.flops_by_layer, method.masks.layer_density()),
            "mask_churn": method.masks.churn_since(self.last_masks),
            **self.costs,
            **deployed,
            **self.best,
            **method.metrics(),
        }
        self.last_masks = method.masks.snapshot()
        return metrics

    def _better(self, value: float) -> bool:
        best = self.best[self.best_key]
        if best is None:
            return True
        return value > best if self.task.metrics[self.task.main_metric] == MAX else value < best

    def _robustness(self) -> dict:
        """Once, at the end: the task's metrics on each of ``robustness.datasets`` (its ``split``), as
        ``shift: {name: {metric: value}}`` (logged ``shift.<name>.<metric>``); for an image classifier
        also corruptions, calibration and (with a reference) noise-ball agreement."""
        from raysparse.robustness.evaluate import refuse_image_options
        from raysparse.tasks.classification import Classification

        cfg, metrics = self.cfg.robustness, {}
        if isinstance(self.task, Classification):
            reference = None
            if cfg.reference is not None:
                reference = build_network(self.cfg.model, self.data.info, given=self.model_source).to(self.device)
                load_into(reference, cfg.reference, "robustness.reference", self.device)
            split = self.data.val if cfg.split == "val" else self.data.test
            metrics = robustness_metrics(self.net, split, cfg, self.device, reference)
        else:  # validation refuses these for a task it can import; a task= object is only known here
            refuse_image_options(cfg, self.task.name or type(self.task).__qualname__)
        shift = {}
        for name, spec in cfg.datasets.items():
            field = f"robustness.datasets.{name}"
            try:
                data = build_splits(spec, self.cfg.seed, self.task)
            except ConfigError as err:  # named as the data block's fields (data.path): say which block
                inside = err.field[len("data"):] if err.field.split(".")[0] == "data" else f" ({err.field})"
                raise ConfigError(field + inside, err.message) from None
            check_model(self.net, data, self.task, field)  # e.g. token ids the model's vocabulary lacks
            loader = make_loader(getattr(data, cfg.split), batch_size=512, shuffle=False, generator=None)
            shift[name] = self.task.evaluate(self.net, loader, self.device)
        return {**metrics, "shift": shift} if shift else metrics

    def context(self, epoch: int) -> EpochContext:
        return EpochContext(
            mask_events=self.method.masks.drain_events(), masks=self.method.masks, model=self.net,
            save_checkpoint=lambda path: self.save_for_retry(path, epoch),
            export_model=lambda: self.method.export(self.net), example_input=self.export_example,
            data_info=dict(self.data.info),
        )


def load_into(net: nn.Module, path: str, field: str, device: torch.device | str = "cpu", *,
              assign: bool = False) -> None:
    """A state_dict file into ``net``: a file that is unsafe, damaged or for another architecture
    is a ConfigError naming ``field``. ``assign``: take the file's tensors (into a meta network)."""
    state = load_state_dict_file(path, field, map_location=device)
    try:
        net.load_state_dict(state, assign=assign)
    except RuntimeError as err:  # missing / unexpected keys, other shapes
        raise ConfigError(field, f"{path!r} does not fit the model: {one_line(err)}") from None


def _listing(names: list[str], shown: int = 6) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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


def _train_epoch(net, loader, optimizer, method: SparseMethod, task: Task, device, step: int) -> float:
    net.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for batch in loader:
        batch = task.to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss, weight = task.loss(net, batch)  # the mean over ``weight`` examples (or tokens)
        penalty = method.regularization_loss()
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(step)
        optimizer.step()
        method.after_optimizer_step(step)
        loss_sum += loss.detach() * weight  # no .item() per step: it would sync the device
        seen += weight
        step += 1
    return _mean_over_ranks(float(loss_sum) / max(seen, 1), device)
