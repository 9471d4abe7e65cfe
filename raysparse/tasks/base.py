"""The task interface: what is learned, apart from how (the loop) and how sparsely (methods).

A task is a small class, like a method: the loss of a batch, the evaluation of a loader into
named metrics (each with its direction), real example inputs for FLOPs, latency and the
pre-start check, and how batches look. The loop, the Sparsifier, the checks and the search only
talk to this interface; nothing outside a task knows about labels, classes or tokens.

Batches may be tensors, ``(inputs, targets)`` tuples or dicts (``input_ids``, ``attention_mask``,
``labels``, as HF collators give them); a model's output may be a tensor, a tuple or an object
with ``.logits`` (an HF ``ModelOutput``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

MAX, MIN = "max", "min"


@dataclass(frozen=True)
class TaskOptions:
    """A task's own options (``task: {name: ..., <option>: ...}``); subclass it, keyword-only."""


class Task:
    """Override ``loss`` and ``evaluate``, declare ``metrics``; the rest has working defaults.

    ``metrics`` maps each metric ``evaluate`` returns (without the ``val_`` / ``test_`` prefix the
    loop adds) to ``"max"`` or ``"min"``; the first is the task's main metric: the one the loop
    selects the best epoch on and prune potential compares.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    metrics: ClassVar[dict[str, str]] = {}
    # keys a data factory may return besides its splits (they describe the data: ``info``)
    data_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: TaskOptions | None = None, *, label_smoothing: float = 0.0):
        self.options = options if options is not None else self.Options()
        self.label_smoothing = label_smoothing

    # ---- what is learned --------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
        """The mean loss of a batch (on the model's device) and what it averages over (examples,
        tokens): the loop weighs batches by it."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """Every metric of ``metrics`` over a loader (in eval mode, without gradients)."""
        raise NotImplementedError

    @property
    def main_metric(self) -> str:
        return next(iter(self.metrics))

    # ---- against the network before pruning (optional) --------------------------------------
    def reference_metrics(self) -> dict[str, str]:
        """Metrics (name -> "max"|"min") comparing the network with itself as built, before any
        mask, on training batches; what the options ask for (causal_lm's ``kl_to_dense``)."""
        return {}

    def reference_batches(self) -> int:
        """How many shuffled training batches the comparison runs on (0: none)."""
        return 0

    def capture_reference(self, model: nn.Module, batches: list, device: torch.device) -> Any:
        """What the comparison needs of the network as built (called once, before pruning)."""
        return None

    def compare_to_reference(self, model: nn.Module, batches: list, reference: Any,
                             device: torch.device) -> dict[str, float]:
        """``reference_metrics``' values for the network now."""
        return {}

    # ---- data -------------------------------------------------------------------------------
    def describe_data(self, splits: Mapping[str, Dataset], given: Mapping, field: str, what: str) -> dict:
        """``info`` of a user's data (what model factories may ask for), from what the factory
        returned besides its splits (``given``) and the splits (``train``, ``test``, maybe
        ``val``), checked."""
        return dict(given)

    def check_output(self, output: Any, batch: Any, info: Mapping, field: str) -> None:
        """Raise a ConfigError on ``field`` when a model's output for ``batch`` has the wrong form."""

    # ---- batches ----------------------------------------------------------------------------
    def to_device(self, batch: Any, device: torch.device) -> Any:
        return move(batch, device)

    def model_input(self, batch: Any) -> Any:
        """What the model is called with: a tensor batch itself, a tuple's first item, a dict's
        entries other than ``labels`` (as keywords)."""
        if isinstance(batch, Mapping):
            return {k: v for k, v in batch.items() if k != "labels"}
        if isinstance(batch, (tuple, list)):
            return batch[0]
        return batch

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return call(model, self.model_input(batch))

    def example_batch(self, dataset: Dataset, size: int) -> Any:
        """``size`` real examples of ``dataset`` (cycled if it has fewer), collated: what FLOPs,
        latency, deployment and the pre-start check run the model on (never made-up values:
        an embedding refuses floats)."""
        return default_collate([dataset[i % len(dataset)] for i in range(size)])

    def example_input(self, dataset: Dataset, size: int, device: torch.device) -> Any:
        return self.model_input(self.to_device(self.example_batch(dataset, size), device))


def move(batch: Any, device: torch.device) -> Any:
    """Tensors of a batch (nested in tuples, lists, dicts) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move(v, device) for v in batch)
    return batch


def call(model: nn.Module, inputs: Any) -> Any:
    """The model on its inputs: a dict as keywords (HF models), anything else as one argument."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor, an HF ``ModelOutput`` (``.logits``), a tuple's first."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"a model output of type {type(output).__name__} holds no logits (expected a tensor, "
                    "a tuple starting with one, or an object with .logits)")


def batch_size_of(inputs: Any) -> int:
    """Examples in a model input (a tensor or a dict of tensors)."""
    if isinstance(inputs, Mapping):
        inputs = next(v for v in inputs.values() if isinstance(v, torch.Tensor))
    return int(inputs.shape[0])


def describe_input(inputs: Any) -> str:
    """A model input's shape for messages: ``[2, 32]`` or ``{input_ids: [2, 32], ...}``."""
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {describe_input(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, torch.Tensor):
        return f"{list(inputs.shape)} {str(inputs.dtype).removeprefix('torch.')}"
    return type(inputs).__name__
